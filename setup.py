"""Build of the optional C accelerator of the masking engine.

Everything else is declared in pyproject.toml. The extension is optional: without a
C compiler and the Python headers the install still succeeds and the engine runs in
pure Python (``proxy_worker.masking.accel.AVAILABLE`` is then False).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "proxy_worker.masking._accel",
            sources=[
                "proxy_worker/masking/_accel/module.c",
                "proxy_worker/masking/_accel/driver.c",
                "proxy_worker/masking/_accel/detectors.c",
                "proxy_worker/masking/_accel/phone.c",
            ],
            depends=["proxy_worker/masking/_accel/accel.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
