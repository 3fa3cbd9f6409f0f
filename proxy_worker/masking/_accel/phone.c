/* PhoneDetector in C (see accel.h). */
#include "accel.h"

void *gh_phone_compile(PyObject *detector)
{
    PyErr_SetString(PyExc_NotImplementedError, "not ported yet");
    return NULL;
}
void gh_phone_free(void *ctx) {}
int gh_find_phone(void *ctx, const char *t, Py_ssize_t n, gh_dets *out)
{
    PyErr_SetString(PyExc_NotImplementedError, "not ported yet");
    return -1;
}
int gh_phone_init(PyObject *module) { return 0; }
