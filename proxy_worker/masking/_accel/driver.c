/* The JSON body driver (see accel.h). */
#include "accel.h"

PyMethodDef gh_driver_methods[] = {
    {NULL, NULL, 0, NULL},
};

int gh_driver_init(PyObject *module) { return 0; }
