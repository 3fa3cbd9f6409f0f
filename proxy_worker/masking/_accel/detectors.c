/* The structural detectors of detectors.py in C (see accel.h). */
#include "accel.h"

static int
todo(void)
{
    PyErr_SetString(PyExc_NotImplementedError, "not ported yet");
    return -1;
}

int gh_find_email(const char *t, Py_ssize_t n, gh_dets *out) { return todo(); }
int gh_find_card(const char *t, Py_ssize_t n, gh_dets *out) { return todo(); }
int gh_find_tin(const char *t, Py_ssize_t n, const char *hint, Py_ssize_t hn, int itin,
                gh_dets *out) { return todo(); }
int gh_find_iban(const char *t, Py_ssize_t n, gh_dets *out) { return todo(); }
int gh_find_ipv4(const char *t, Py_ssize_t n, gh_dets *out) { return todo(); }
int gh_detectors_init(PyObject *module) { return 0; }
