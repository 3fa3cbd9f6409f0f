/* proxy_worker.masking._accel: module definition, detection vectors, test
 * entry points and (driver.c) the JSON body driver. See accel.h. */
#include "accel.h"

#include <string.h>

/* ------------------------------------------------------------------ dets */

int
gh_dets_push(gh_dets *d, Py_ssize_t start, Py_ssize_t end, int type, PyObject *normalised)
{
    if (normalised == NULL)
        return -1;
    if (d->n == d->cap) {
        Py_ssize_t cap = d->cap ? d->cap * 2 : 16;
        gh_det *v = PyMem_Realloc(d->v, (size_t)cap * sizeof(gh_det));
        if (v == NULL) {
            Py_DECREF(normalised);
            PyErr_NoMemory();
            return -1;
        }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n].start = start;
    d->v[d->n].end = end;
    d->v[d->n].type = type;
    d->v[d->n].normalised = normalised;
    d->n++;
    return 0;
}

int
gh_dets_push_ascii(gh_dets *d, Py_ssize_t start, Py_ssize_t end, int type, const char *norm,
                   Py_ssize_t norm_len)
{
    return gh_dets_push(d, start, end, type, PyUnicode_FromStringAndSize(norm, norm_len));
}

void
gh_dets_clear(gh_dets *d)
{
    for (Py_ssize_t i = 0; i < d->n; i++)
        Py_CLEAR(d->v[i].normalised);
    d->n = 0;
}

void
gh_dets_free(gh_dets *d)
{
    gh_dets_clear(d);
    PyMem_Free(d->v);
    d->v = NULL;
    d->cap = 0;
}

/* ------------------------------------------------------------------ types */

const char *const gh_type_names[GH_NTYPES] = {
    "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "US_ITIN", "IP_ADDRESS", "PHONE",
};

static PyObject *gh_type_str[GH_NTYPES];

PyObject *
gh_type_name(int type)
{
    return gh_type_str[type];
}

/* ------------------------------------------------------------------ phone contexts */

static void
phone_capsule_free(PyObject *capsule)
{
    void *ctx = PyCapsule_GetPointer(capsule, "gatehouse.phone");
    if (ctx != NULL)
        gh_phone_free(ctx);
}

/* The compiled context of a Python PhoneDetector, cached on the detector as
 * ``_accel_ctx`` (borrowed pointer, owned by the detector's capsule). */
void *
gh_phone_context(PyObject *detector)
{
    PyObject *cap = PyObject_GetAttrString(detector, "_accel_ctx");
    if (cap == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        void *ctx = gh_phone_compile(detector);
        if (ctx == NULL)
            return NULL;
        cap = PyCapsule_New(ctx, "gatehouse.phone", phone_capsule_free);
        if (cap == NULL) {
            gh_phone_free(ctx);
            return NULL;
        }
        if (PyObject_SetAttrString(detector, "_accel_ctx", cap) < 0) {
            Py_DECREF(cap);
            return NULL;
        }
    }
    void *ctx = PyCapsule_GetPointer(cap, "gatehouse.phone");
    Py_DECREF(cap);
    return ctx;
}

/* ------------------------------------------------------------------ find() */

static int
kind_of(const char *kind)
{
    for (int i = 0; i < GH_NTYPES; i++)
        if (strcmp(kind, gh_type_names[i]) == 0)
            return i;
    return -1;
}

/* Run one finder on ASCII text (a NUL is a blanked-out character). */
int
gh_run_finder(int type, void *phone_ctx, const char *t, Py_ssize_t n, const char *hint,
              Py_ssize_t hn, gh_dets *out)
{
    switch (type) {
    case GH_EMAIL:
        return gh_find_email(t, n, out);
    case GH_IBAN:
        return gh_find_iban(t, n, out);
    case GH_CARD:
        return gh_find_card(t, n, out);
    case GH_SSN:
        return gh_find_tin(t, n, hint, hn, 0, out);
    case GH_ITIN:
        return gh_find_tin(t, n, hint, hn, 1, out);
    case GH_IP:
        return gh_find_ipv4(t, n, out);
    case GH_PHONE:
        return gh_find_phone(phone_ctx, t, n, out);
    }
    PyErr_SetString(PyExc_ValueError, "unknown detector");
    return -1;
}

PyDoc_STRVAR(find_doc,
"find(entity_type, text, hint='', detector=None, detection=tuple) -> list\n\n"
"Run the C finder of one built-in entity type (EMAIL, IBAN, CREDIT_CARD, US_SSN,\n"
"US_ITIN, IP_ADDRESS (IPv4 only), PHONE) on ASCII ``text`` and return its\n"
"detections as ``(start, end, entity_type, normalised)`` tuples, or instances of\n"
"``detection``, a named tuple class of that shape\n"
"(``proxy_worker.masking.base.Detection``). PHONE needs ``detector``, the Python\n"
"``PhoneDetector`` whose regions to use. The engine calls it on ASCII strings\n"
"(``Masker.scan``) and uses ``mask_json`` for JSON bodies.\n\n"
"Raises ValueError for non-ASCII text or an unknown type, MaskingError as the\n"
"Python detector would.");

static PyObject *
accel_find(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"entity_type", "text", "hint", "detector", "detection", NULL};
    const char *kind;
    PyObject *text, *hint = NULL, *detector = Py_None;
    PyTypeObject *cls = &PyTuple_Type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sU|UOO!:find", kwlist, &kind, &text, &hint,
                                     &detector, &PyType_Type, &cls))
        return NULL;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "detection must be a tuple class");
        return NULL;
    }
    int type = kind_of(kind);
    if (type < 0) {
        PyErr_Format(PyExc_ValueError, "no C finder for %s", kind);
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text) || (hint != NULL && !PyUnicode_IS_ASCII(hint))) {
        PyErr_SetString(PyExc_ValueError, "the C finders take ASCII text");
        return NULL;
    }
    void *ctx = NULL;
    if (type == GH_PHONE) {
        if (detector == Py_None) {
            PyErr_SetString(PyExc_ValueError, "PHONE needs its PhoneDetector");
            return NULL;
        }
        ctx = gh_phone_context(detector);
        if (ctx == NULL)
            return NULL;
    }
    const char *t = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const char *h = hint ? (const char *)PyUnicode_DATA(hint) : "";
    Py_ssize_t hn = hint ? PyUnicode_GET_LENGTH(hint) : 0;
    gh_dets dets = {0};
    if (gh_run_finder(type, ctx, t, n, h, hn, &dets) < 0) {
        gh_dets_free(&dets);
        return NULL;
    }
    PyObject *res = PyList_New(dets.n);
    if (res == NULL) {
        gh_dets_free(&dets);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < dets.n; i++) {
        gh_det *d = &dets.v[i];
        PyObject *start = PyLong_FromSsize_t(d->start), *end = PyLong_FromSsize_t(d->end);
        PyObject *tup = start && end ? cls->tp_alloc(cls, 4) : NULL;
        if (tup == NULL) {
            Py_XDECREF(start);
            Py_XDECREF(end);
            Py_DECREF(res);
            gh_dets_free(&dets);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, 0, start);
        PyTuple_SET_ITEM(tup, 1, end);
        PyTuple_SET_ITEM(tup, 2, Py_NewRef(gh_type_str[d->type]));
        PyTuple_SET_ITEM(tup, 3, Py_NewRef(d->normalised));
        PyList_SET_ITEM(res, i, tup);
    }
    gh_dets_free(&dets);
    return res;
}

/* Private builds of one part (helpers' test builds) stub out the others. */
#ifdef GH_NO_DRIVER
static PyMethodDef gh_driver_methods[] = {{NULL, NULL, 0, NULL}};
static int gh_driver_init(PyObject *module) { return 0; }
#else
extern PyMethodDef gh_driver_methods[];
int gh_driver_init(PyObject *module);
#endif
#ifdef GH_NO_PHONE
void *gh_phone_compile(PyObject *detector)
{
    PyErr_SetString(PyExc_NotImplementedError, "built without phone.c");
    return NULL;
}
void gh_phone_free(void *ctx) {}
int gh_find_phone(void *ctx, const char *t, Py_ssize_t n, gh_dets *out) { return -1; }
int gh_phone_init(PyObject *module) { return 0; }
#endif
#ifdef GH_NO_DETECTORS
static int no_detectors(void)
{
    PyErr_SetString(PyExc_NotImplementedError, "built without detectors.c");
    return -1;
}
int gh_find_email(const char *t, Py_ssize_t n, gh_dets *out) { return no_detectors(); }
int gh_find_card(const char *t, Py_ssize_t n, gh_dets *out) { return no_detectors(); }
int gh_find_tin(const char *t, Py_ssize_t n, const char *hint, Py_ssize_t hn, int itin,
                gh_dets *out) { return no_detectors(); }
int gh_find_iban(const char *t, Py_ssize_t n, gh_dets *out) { return no_detectors(); }
int gh_find_ipv4(const char *t, Py_ssize_t n, gh_dets *out) { return no_detectors(); }
int gh_detectors_init(PyObject *module) { return 0; }
#endif

PyDoc_STRVAR(escape_view_doc,
"escape_view(body) -> bytes\n\n"
"``body`` with each simple JSON escape replaced by a same-length stand-in that\n"
"shows what it decodes to (``\\n`` -> two newlines, ``\\/`` -> ``//``, ``\\\"``\n"
"and ``\\\\`` kept), as the engine's ``_SIMPLE_ESCAPE_RE.sub(_escape_view, body)``\n"
"does; ``\\u`` escapes are kept. Returns ``body`` itself when it has no backslash.");

static PyObject *
accel_escape_view(PyObject *self, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "escape_view takes bytes");
        return NULL;
    }
    const char *b = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    const char *first = memchr(b, '\\', (size_t)n);
    if (first == NULL)
        return Py_NewRef(arg);
    PyObject *out = PyBytes_FromStringAndSize(b, n);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = first - b; i + 1 < n; i++) {
        if (b[i] != '\\')
            continue;
        char r;
        switch (b[i + 1]) {
        case '"': case '\\': i++; continue; /* kept as they are */
        case '/': r = '/'; break;
        case 'b': case 'f': r = ' '; break;
        case 'n': r = '\n'; break;
        case 'r': r = '\r'; break;
        case 't': r = '\t'; break;
        default: continue;
        }
        o[i] = o[i + 1] = r;
        i++;
    }
    return out;
}

PyDoc_STRVAR(render_doc,
"render(text, detections, fixed, placeholder) -> str\n\n"
"``Masker.render``: ``text`` with each detection (sorted, non-overlapping\n"
"``(start, end, entity_type, normalised)`` tuples within ``text``) replaced by\n"
"``fixed[entity_type]`` when the type has a fixed placeholder, else by\n"
"``placeholder(entity_type, raw, normalised)``.");

static PyObject *
accel_render(PyObject *self, PyObject *args)
{
    PyObject *text, *dets, *fixed, *placeholder;
    if (!PyArg_ParseTuple(args, "UO!O!O:render", &text, &PyList_Type, &dets, &PyDict_Type,
                          &fixed, &placeholder))
        return NULL;
    Py_ssize_t k = PyList_GET_SIZE(dets), n = PyUnicode_GET_LENGTH(text), pos = 0;
    if (k == 0)
        return Py_NewRef(text);
    PyObject *parts = PyList_New(0);
    if (parts == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *d = PyList_GET_ITEM(dets, i);
        if (!PyTuple_Check(d) || PyTuple_GET_SIZE(d) != 4) {
            PyErr_SetString(PyExc_TypeError, "detections must be 4-tuples");
            goto fail;
        }
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(d, 0));
        Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(d, 1));
        if (PyErr_Occurred())
            goto fail;
        if (start < pos || end < start || end > n) {
            PyErr_SetString(PyExc_ValueError, "detections must be sorted, disjoint, in text");
            goto fail;
        }
        PyObject *seg = PyUnicode_Substring(text, pos, start);
        if (seg == NULL || PyList_Append(parts, seg) < 0) {
            Py_XDECREF(seg);
            goto fail;
        }
        Py_DECREF(seg);
        PyObject *type = PyTuple_GET_ITEM(d, 2);
        PyObject *ph = PyDict_GetItemWithError(fixed, type);
        if (ph != NULL)
            Py_INCREF(ph);
        else if (PyErr_Occurred())
            goto fail;
        else {
            PyObject *raw = PyUnicode_Substring(text, start, end);
            if (raw == NULL)
                goto fail;
            ph = PyObject_CallFunctionObjArgs(placeholder, type, raw, PyTuple_GET_ITEM(d, 3),
                                              NULL);
            Py_DECREF(raw);
            if (ph == NULL)
                goto fail;
        }
        int rc = PyList_Append(parts, ph);
        Py_DECREF(ph);
        if (rc < 0)
            goto fail;
        pos = end;
    }
    PyObject *tail = PyUnicode_Substring(text, pos, n);
    if (tail == NULL || PyList_Append(parts, tail) < 0) {
        Py_XDECREF(tail);
        goto fail;
    }
    Py_DECREF(tail);
    PyObject *empty = PyUnicode_New(0, 0);
    PyObject *out = empty ? PyUnicode_Join(empty, parts) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(parts);
    return out;
fail:
    Py_DECREF(parts);
    return NULL;
}

PyDoc_STRVAR(located_doc,
"located(detections, location, finding) -> list\n\n"
"``[finding(d.entity_type, f\"{location}@{d.start}\") for d in detections]``: the\n"
"findings of ``Masker.mask_text``.");

static PyObject *
accel_located(PyObject *self, PyObject *args)
{
    PyObject *dets, *location, *cls_obj;
    if (!PyArg_ParseTuple(args, "O!UO!:located", &PyList_Type, &dets, &location, &PyType_Type,
                          &cls_obj))
        return NULL;
    PyTypeObject *cls = (PyTypeObject *)cls_obj;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "finding must be a tuple class");
        return NULL;
    }
    Py_ssize_t k = PyList_GET_SIZE(dets), ln;
    const char *lu = PyUnicode_AsUTF8AndSize(location, &ln);
    if (lu == NULL)
        return NULL;
    char *buf = PyMem_Malloc((size_t)ln + 32);
    if (buf == NULL)
        return PyErr_NoMemory();
    memcpy(buf, lu, (size_t)ln);
    buf[ln] = '@';
    PyObject *out = PyList_New(k);
    if (out == NULL) {
        PyMem_Free(buf);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *d = PyList_GET_ITEM(dets, i);
        Py_ssize_t start = -1;
        if (PyTuple_Check(d) && PyTuple_GET_SIZE(d) == 4)
            start = PyLong_AsSsize_t(PyTuple_GET_ITEM(d, 0));
        if (start < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "detections must be 4-tuples from offset 0");
            PyMem_Free(buf);
            Py_DECREF(out);
            return NULL;
        }
        int w = snprintf(buf + ln + 1, 31, "%zd", start);
        PyObject *loc = PyUnicode_DecodeUTF8(buf, ln + 1 + w, "strict");
        PyObject *f = loc ? cls->tp_alloc(cls, 2) : NULL;
        if (f == NULL) {
            Py_XDECREF(loc);
            PyMem_Free(buf);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(f, 0, Py_NewRef(PyTuple_GET_ITEM(d, 2)));
        PyTuple_SET_ITEM(f, 1, loc);
        PyObject_GC_UnTrack(f);
        PyList_SET_ITEM(out, i, f);
    }
    PyMem_Free(buf);
    return out;
}

PyDoc_STRVAR(prepare_doc,
"prepare(detector) -> None\n\n"
"Compile the C context of a Python PhoneDetector now (it is otherwise compiled on\n"
"first use): the engine does it when it builds a masker.");

static PyObject *
accel_prepare(PyObject *self, PyObject *detector)
{
    if (gh_phone_context(detector) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef accel_methods[] = {
    {"prepare", accel_prepare, METH_O, prepare_doc},
    {"escape_view", accel_escape_view, METH_O, escape_view_doc},
    {"render", accel_render, METH_VARARGS, render_doc},
    {"located", accel_located, METH_VARARGS, located_doc},
    {"find", (PyCFunction)(void (*)(void))accel_find, METH_VARARGS | METH_KEYWORDS, find_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
"C accelerator of the masking engine (optional; see proxy_worker/masking/accel.py).");

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT, "_accel", module_doc, -1, accel_methods,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    PyObject *m = PyModule_Create(&accel_module);
    if (m == NULL)
        return NULL;
    for (int i = 0; i < GH_NTYPES; i++) {
        gh_type_str[i] = PyUnicode_InternFromString(gh_type_names[i]);
        if (gh_type_str[i] == NULL)
            goto fail;
    }
    PyObject *names = PyTuple_New(GH_NTYPES);
    if (names == NULL)
        goto fail;
    for (int i = 0; i < GH_NTYPES; i++)
        PyTuple_SET_ITEM(names, i, Py_NewRef(gh_type_str[i]));
    /* GH_* index -> entity type: the type numbers of mask_json's plan */
    int added = PyModule_AddObjectRef(m, "ENTITY_TYPES", names);
    Py_DECREF(names);
    if (added < 0)
        goto fail;
    if (PyModule_AddFunctions(m, gh_driver_methods) < 0)
        goto fail;
    if (gh_detectors_init(m) < 0 || gh_phone_init(m) < 0 || gh_driver_init(m) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
