/* Gatehouse masking accelerator: shared declarations.
 *
 * The accelerator is an optional CPython extension (proxy_worker.masking._accel)
 * that masks PII-dense JSON bodies without a Python call per value. Every
 * finder here reproduces one Python detector of proxy_worker/masking exactly
 * (same spans, same normalised form) on ASCII text; the Python detectors stay
 * the reference, and tests/proxy_worker/test_masking_accel.py compares both.
 *
 * Conventions for every finder:
 *   - `t` is ASCII text of length `n` (bytes 0..127). A NUL byte is a
 *     character blanked out by an earlier, higher-priority detector (the
 *     engine's `_view`): it is an ordinary non-word, non-digit character.
 *   - Offsets are byte offsets (== Python str indices for ASCII text).
 *   - Detections are appended to `out` in ascending start order, never
 *     overlapping each other, exactly as the Python `find` yields them.
 *   - Return 0 on success, -1 with a Python exception set.
 */
#ifndef GATEHOUSE_ACCEL_H
#define GATEHOUSE_ACCEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Entity types handled in C (index into the driver's type table). */
enum {
    GH_EMAIL = 0,
    GH_IBAN,
    GH_CARD,
    GH_SSN,
    GH_ITIN,
    GH_IP,
    GH_PHONE,
    GH_NTYPES
};

typedef struct {
    Py_ssize_t start, end;
    int type;             /* GH_* */
    PyObject *normalised; /* owned reference to a str */
} gh_det;

typedef struct {
    gh_det *v;
    Py_ssize_t n, cap;
} gh_dets;

/* Append a detection; `normalised` is stolen (also on failure). 0 / -1. */
int gh_dets_push(gh_dets *d, Py_ssize_t start, Py_ssize_t end, int type, PyObject *normalised);
/* Same with the normalised form given as ASCII bytes (copied into a new str). */
int gh_dets_push_ascii(gh_dets *d, Py_ssize_t start, Py_ssize_t end, int type,
                       const char *norm, Py_ssize_t norm_len);
void gh_dets_clear(gh_dets *d); /* drop every detection (n = 0), keep the buffer */
void gh_dets_free(gh_dets *d);

/* ASCII character classes as Python's re sees them on ASCII text. */
#define GH_DIGIT(c) ((unsigned)((unsigned char)(c) - '0') < 10u)
#define GH_ALPHA(c) ((unsigned)(((unsigned char)(c) | 0x20) - 'a') < 26u)
#define GH_ALNUM(c) (GH_DIGIT(c) || GH_ALPHA(c))
#define GH_WORD(c) (GH_ALNUM(c) || (c) == '_')

/* detectors.c: the structural detectors of detectors.py. */
int gh_find_email(const char *t, Py_ssize_t n, gh_dets *out);        /* EmailDetector */
int gh_find_card(const char *t, Py_ssize_t n, gh_dets *out);         /* CreditCardDetector */
/* UsSsnDetector (itin = 0) / UsItinDetector (itin = 1); `hint` (ASCII, may be
 * empty) is the JSON key the text is stored under. */
int gh_find_tin(const char *t, Py_ssize_t n, const char *hint, Py_ssize_t hn, int itin,
                gh_dets *out);
int gh_find_iban(const char *t, Py_ssize_t n, gh_dets *out);         /* IbanDetector */
/* IpAddressDetector restricted to IPv4: the driver never calls it on a text
 * that matches the IPv6 gate (":" [0-9A-Fa-f]{0,4} ":"). */
int gh_find_ipv4(const char *t, Py_ssize_t n, gh_dets *out);
/* detectors.c: prepare module-level tables (IBAN registry...). Called once from
 * the module init; 0 / -1. */
int gh_detectors_init(PyObject *module);

/* phone.c: PhoneDetector. A context is compiled once per Python PhoneDetector
 * (regions etc.) and owned by a capsule. */
void *gh_phone_compile(PyObject *detector); /* NULL + exception on failure */
void gh_phone_free(void *ctx);
int gh_find_phone(void *ctx, const char *t, Py_ssize_t n, gh_dets *out);
int gh_phone_init(PyObject *module); /* once from module init; 0 / -1 */

#endif
