/* The JSON body driver: mask_json(body, plan, events).
 *
 * Mirrors Masker._splice_json_body (proxy_worker/masking/engine.py, jsonnav.py)
 * for the C finders: one pass over a UTF-8 JSON document that
 *
 *   - checks the syntax (RFC 8259) and gives up (returns None, the engine then
 *     takes its Python path) on anything it does not handle exactly as Python's
 *     json module: NaN/Infinity, control characters in strings, very long
 *     integers, deep nesting, invalid escapes;
 *   - runs the C finders, in the masker's priority order and with the engine's
 *     merge and blanking rules (Masker._scan_uncached, _merge, _view), on every
 *     ASCII string value that holds an '@' or a digit, and splices placeholders
 *     into the string's raw bytes (escapes elsewhere in the string are kept);
 *   - hands a value to the engine's Python code ("delegates" it) when C cannot
 *     decide it exactly: a string with a match of a gate of a detector that has
 *     no C finder (the `events`), a string under a secret-like key, a non-ASCII
 *     or \u-escaped string that could hold something, a string longer than the
 *     engine's window threshold, an integer the engine would scan;
 *   - gives up when an object key holds something to mask (the engine's full
 *     walk renames keys).
 *
 * Findings are Finding(entity_type, JSON path) in document order, as the Python walk
 * records them. The plan (built by Masker._accel_plan) is a tuple:
 *
 *   (types, fixed, placeholder, delegate_str, delegate_int, key_info, key_memo,
 *    phone_detector, int_lengths, max_chars, finding)
 *
 *   types         tuple[int]: GH_* of the C finders, priority order
 *   fixed         tuple[bytes | None] indexed by GH_*: the placeholder of the
 *                 redact/drop strategies, None when `placeholder` must be called
 *   placeholder   (entity_type, raw, normalised) -> str
 *   delegate_str  (token: bytes, hint: str) -> None | (json_text: str, types: tuple[str])
 *                 `token` is the raw JSON string token, quotes included
 *   delegate_int  (token: str, hint: str) -> None | (json_text: str, types: tuple[str])
 *   key_info      (raw_key: bytes) -> (flags: int, path_suffix: bytes, hint: bytes)
 *   key_memo      dict raw_key -> key_info(raw_key), filled here
 *   phone_detector  the PhoneDetector or None
 *   int_lengths   int: bit k set when integers of k digits are scanned
 *   max_chars     int: longer strings are delegated (the engine scans windows)
 *   finding       the engine's Finding class, a named tuple (entity_type, location)
 */
#include "accel.h"

#include <stdint.h>
#include <string.h>

PyObject *gh_type_name(int type);
void *gh_phone_context(PyObject *detector);
int gh_run_finder(int type, void *phone_ctx, const char *t, Py_ssize_t n, const char *hint,
                  Py_ssize_t hn, gh_dets *out);

/* key_info flags (Masker._accel_key_info) */
#define KEY_FORCE 1     /* values are scanned whatever the prefilter says */
#define KEY_PHONE 2     /* integers under the key are phone candidates */
#define KEY_MASKED 4    /* the key itself holds something to mask */
#define KEY_NONASCII 8  /* the decoded key is not ASCII: no C hint */

#define MAX_DEPTH 500
#define MAX_INT_DIGITS 4000 /* below Python's int() limit of 4300 digits */
#define GIVE_UP (-2)        /* return code: not handled here, no exception */

typedef struct {
    int flags;
    const char *hint; /* borrowed from the key memo's bytes */
    Py_ssize_t hn;
} hint_t;

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} buf_t;

/* Per-call cache of key entries: records repeat their keys, and a dict lookup needs a
 * bytes object per key. Open addressing on an FNV-1a hash of the raw key. */
#define KEY_SLOTS 256

typedef struct {
    const char *raw; /* into the body */
    Py_ssize_t len;
    PyObject *ent;   /* borrowed from the plan's key memo */
} key_slot;

typedef struct {
    /* plan */
    int ntypes;
    int types[GH_NTYPES];
    PyObject *fixed[GH_NTYPES]; /* borrowed bytes or NULL */
    PyObject *placeholder, *delegate_str, *delegate_int, *key_info, *key_memo;
    PyTypeObject *finding; /* a tuple subclass */
    void *phone_ctx;
    unsigned long long int_lengths;
    Py_ssize_t max_chars;
    /* input */
    const char *b;
    Py_ssize_t n;
    PyObject *events; /* list of ascending byte offsets */
    Py_ssize_t nev, kev;
    /* output */
    buf_t out;
    Py_ssize_t copied; /* body[0:copied] is in out */
    PyObject *findings;
    buf_t path;
    /* scratch */
    buf_t dec;        /* decoded string */
    Py_ssize_t *map;  /* dec offset -> raw offset (n + 1 entries) */
    Py_ssize_t mapcap;
    buf_t view;       /* dec with accepted detections blanked */
    gh_dets acc, tmp, merged;
    key_slot keys[KEY_SLOTS];
} drv_t;

/* ------------------------------------------------------------------ buffers */

static int
buf_reserve(buf_t *b, Py_ssize_t extra)
{
    if (b->n + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
buf_put(buf_t *b, const char *s, Py_ssize_t len)
{
    if (len == 0)
        return 0; /* (memcpy with a NULL buffer is undefined even for 0 bytes) */
    if (buf_reserve(b, len) < 0)
        return -1;
    memcpy(b->p + b->n, s, (size_t)len);
    b->n += len;
    return 0;
}

/* A str as JSON string content (quotes not included): ASCII kept, '"', '\\' and
 * control characters escaped, non-ASCII as UTF-8 (ensure_ascii=False). */
static int
buf_put_json_str(buf_t *b, PyObject *s)
{
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(s, &len);
    if (u == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)u[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            if (buf_put(b, esc, 2) < 0)
                return -1;
        }
        else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            if (buf_put(b, esc, 6) < 0)
                return -1;
        }
        else if (buf_put(b, (const char *)&u[i], 1) < 0)
            return -1;
    }
    return 0;
}

/* Copy the untouched body up to `pos` into the output. */
static int
flush_to(drv_t *d, Py_ssize_t pos)
{
    if (buf_put(&d->out, d->b + d->copied, pos - d->copied) < 0)
        return -1;
    d->copied = pos;
    return 0;
}

/* ------------------------------------------------------------------ events */

/* A Python-only gate matched in body[start:end) (events before `start` are passed). */
static int
has_event(drv_t *d, Py_ssize_t start, Py_ssize_t end)
{
    while (d->kev < d->nev) {
        Py_ssize_t e = PyLong_AsSsize_t(PyList_GET_ITEM(d->events, d->kev));
        if (e >= start)
            return e < end;
        d->kev++;
    }
    return 0;
}

/* ------------------------------------------------------------------ findings */

/* Append Finding(type, loc) to the findings (the named tuple built as
 * tuple.__new__ builds it). */
static int
add_finding(drv_t *d, PyObject *type, PyObject *loc)
{
    PyObject *f = d->finding->tp_alloc(d->finding, 2);
    if (f == NULL)
        return -1;
    PyTuple_SET_ITEM(f, 0, Py_NewRef(type));
    PyTuple_SET_ITEM(f, 1, Py_NewRef(loc));
    /* Two strs cannot form a cycle: keep thousands of findings out of the GC's
     * generations (the GC untracks such tuples itself, but only when it runs). */
    PyObject_GC_UnTrack(f);
    int rc = PyList_Append(d->findings, f);
    Py_DECREF(f);
    return rc;
}

static PyObject *
path_str(drv_t *d)
{
    return PyUnicode_DecodeUTF8(d->path.p, d->path.n, "strict");
}

static int
add_findings_types(drv_t *d, PyObject *types)
{
    PyObject *loc = path_str(d);
    if (loc == NULL)
        return -1;
    Py_ssize_t k = PyTuple_GET_SIZE(types);
    for (Py_ssize_t i = 0; i < k; i++) {
        if (add_finding(d, PyTuple_GET_ITEM(types, i), loc) < 0) {
            Py_DECREF(loc);
            return -1;
        }
    }
    Py_DECREF(loc);
    return 0;
}

/* ------------------------------------------------------------------ delegation */

/* Replace body[s:e) with the JSON text `res[0]` and record `res[1]` (or leave it when
 * `res` is None). Steals `res`. */
static int
apply_delegated(drv_t *d, Py_ssize_t s, Py_ssize_t e, PyObject *res)
{
    if (res == NULL)
        return -1;
    if (res == Py_None) {
        Py_DECREF(res);
        return 0;
    }
    PyObject *text, *types;
    if (!PyArg_ParseTuple(res, "UO!", &text, &PyTuple_Type, &types)) {
        Py_DECREF(res);
        return -1;
    }
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(text, &len);
    int rc = -1;
    if (u != NULL && flush_to(d, s) == 0 && buf_put(&d->out, u, len) == 0 &&
        add_findings_types(d, types) == 0) {
        d->copied = e;
        rc = 0;
    }
    Py_DECREF(res);
    return rc;
}

static int
delegate_string(drv_t *d, Py_ssize_t s, Py_ssize_t e, const hint_t *h)
{
    PyObject *token = PyBytes_FromStringAndSize(d->b + s, e - s);
    if (token == NULL)
        return -1;
    PyObject *hint = h ? PyUnicode_DecodeUTF8(h->hint, h->hn, "strict") : PyUnicode_New(0, 0);
    if (hint == NULL) {
        Py_DECREF(token);
        return -1;
    }
    PyObject *res = PyObject_CallFunctionObjArgs(d->delegate_str, token, hint, NULL);
    Py_DECREF(token);
    Py_DECREF(hint);
    return apply_delegated(d, s, e, res);
}

/* ------------------------------------------------------------------ scanning */

/* Masker._merge: keep the accepted detections, add the new ones that overlap
 * nothing accepted (or added before them). Consumes d->tmp; result in d->acc. */
static int
merge(drv_t *d)
{
    gh_dets *acc = &d->acc, *nw = &d->tmp, *out = &d->merged;
    Py_ssize_t i = 0, n = acc->n;
    out->n = 0;
    for (Py_ssize_t j = 0; j < nw->n; j++) {
        gh_det *x = &nw->v[j];
        while (i < n && acc->v[i].end <= x->start) {
            if (gh_dets_push(out, acc->v[i].start, acc->v[i].end, acc->v[i].type,
                             acc->v[i].normalised) < 0)
                goto fail;
            acc->v[i++].normalised = NULL;
        }
        if ((i < n && acc->v[i].start < x->end) ||
            (out->n && out->v[out->n - 1].end > x->start)) {
            Py_CLEAR(x->normalised);
            continue;
        }
        if (gh_dets_push(out, x->start, x->end, x->type, x->normalised) < 0)
            goto fail;
        x->normalised = NULL;
    }
    for (; i < n; i++) {
        if (gh_dets_push(out, acc->v[i].start, acc->v[i].end, acc->v[i].type,
                         acc->v[i].normalised) < 0)
            goto fail;
        acc->v[i].normalised = NULL;
    }
    nw->n = 0;
    acc->n = 0;
    gh_dets swap = *acc;
    *acc = *out;
    *out = swap;
    return 0;
fail:
    /* push stole the reference it failed on; drop the rest */
    for (; i < n; i++)
        Py_CLEAR(acc->v[i].normalised);
    acc->n = 0;
    gh_dets_clear(nw);
    return -1;
}

/* Masker._scan_uncached over the C finders, on d->dec[0:m] (ASCII). */
static int
scan(drv_t *d, Py_ssize_t m, const hint_t *h)
{
    gh_dets_clear(&d->acc);
    if (buf_reserve(&d->view, m + 1) < 0)
        return -1;
    memcpy(d->view.p, d->dec.p, (size_t)m);
    d->view.p[m] = 0;
    const char *hint = h ? h->hint : "";
    Py_ssize_t hn = h ? h->hn : 0;
    for (int k = 0; k < d->ntypes; k++) {
        int type = d->types[k];
        gh_dets_clear(&d->tmp);
        if (gh_run_finder(type, d->phone_ctx, d->view.p, m, hint, hn, &d->tmp) < 0) {
            gh_dets_clear(&d->tmp);
            return -1;
        }
        if (d->tmp.n == 0)
            continue;
        if (merge(d) < 0)
            return -1;
        /* Masker._view: later finders see accepted detections as NULs */
        for (Py_ssize_t i = 0; i < d->acc.n; i++)
            memset(d->view.p + d->acc.v[i].start, 0,
                   (size_t)(d->acc.v[i].end - d->acc.v[i].start));
    }
    return 0;
}

/* Decode the simple escapes of body[s+1:e-1) (no \u: the caller checked) into
 * d->dec with the offset map; returns the decoded length or -1. */
static Py_ssize_t
decode_simple(drv_t *d, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t len = e - s - 2;
    d->dec.n = 0;
    if (buf_reserve(&d->dec, len + 1) < 0)
        return -1;
    if (d->mapcap < len + 1) {
        Py_ssize_t *map = PyMem_Realloc(d->map, (size_t)(len + 1) * sizeof(Py_ssize_t));
        if (map == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        d->map = map;
        d->mapcap = len + 1;
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = s + 1; i < e - 1; i++) {
        char c = d->b[i];
        d->map[m] = i;
        if (c == '\\') {
            char x = d->b[++i];
            switch (x) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            default: c = x; break; /* '"', '\\', '/' */
            }
        }
        d->dec.p[m++] = c;
    }
    d->map[m] = e - 1;
    return m;
}

/* Write the masked string token for body[s:e) (decoded into d->dec) with the
 * detections of d->acc, and record the findings. */
static int
render(drv_t *d, Py_ssize_t s, Py_ssize_t e)
{
    if (flush_to(d, s + 1) < 0)
        return -1;
    PyObject *loc = path_str(d);
    if (loc == NULL)
        return -1;
    Py_ssize_t raw = s + 1; /* next raw byte of the string to copy */
    for (Py_ssize_t i = 0; i < d->acc.n; i++) {
        gh_det *x = &d->acc.v[i];
        Py_ssize_t rs = d->map[x->start], re_ = d->map[x->end];
        if (buf_put(&d->out, d->b + raw, rs - raw) < 0)
            goto fail;
        raw = re_;
        PyObject *fixed = d->fixed[x->type];
        if (fixed != NULL) {
            if (buf_put(&d->out, PyBytes_AS_STRING(fixed), PyBytes_GET_SIZE(fixed)) < 0)
                goto fail;
        }
        else {
            PyObject *orig = PyUnicode_FromStringAndSize(d->dec.p + x->start, x->end - x->start);
            if (orig == NULL)
                goto fail;
            PyObject *ph = PyObject_CallFunctionObjArgs(d->placeholder, gh_type_name(x->type),
                                                        orig, x->normalised, NULL);
            Py_DECREF(orig);
            if (ph == NULL)
                goto fail;
            int rc = PyUnicode_Check(ph) ? buf_put_json_str(&d->out, ph) : -1;
            if (rc < 0 && !PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "placeholder must return str");
            Py_DECREF(ph);
            if (rc < 0)
                goto fail;
        }
        if (add_finding(d, gh_type_name(x->type), loc) < 0)
            goto fail;
    }
    Py_DECREF(loc);
    d->copied = raw;
    return 0;
fail:
    Py_DECREF(loc);
    return -1;
}

/* Bytes 0xD9, 0xDB, 0xE0, 0xEF lead the UTF-8 of the non-ASCII digits the phone gate
 * knows (Arabic-Indic, extended Arabic-Indic, Devanagari, full-width). */
#define DIGIT_LEAD(c) ((c) == 0xD9 || (c) == 0xDB || (c) == 0xE0 || (c) == 0xEF)

/* The string token body[s:e) (quotes included), after a value-leading token ending
 * at `lead`. */
static int
string_value(drv_t *d, Py_ssize_t lead, Py_ssize_t s, Py_ssize_t e, const hint_t *h)
{
    int interesting = 0, escapes = 0, uesc = 0, nonascii = 0;
    for (Py_ssize_t i = s + 1; i < e - 1; i++) {
        unsigned char c = (unsigned char)d->b[i];
        if (c == '@' || GH_DIGIT(c))
            interesting = 1;
        else if (c == '\\') {
            escapes = 1;
            if (d->b[++i] == 'u')
                uesc = 1;
        }
        else if (c >= 0x80) {
            nonascii = 1;
            if (DIGIT_LEAD(c))
                interesting = 1;
        }
    }
    if (has_event(d, lead, e) || (h && (h->flags & KEY_FORCE)))
        return delegate_string(d, s, e, h);
    if (!interesting && !uesc)
        return 0;
    if (nonascii || uesc || (h && (h->flags & KEY_NONASCII)) || e - s - 2 > d->max_chars)
        return delegate_string(d, s, e, h);
    Py_ssize_t m;
    if (escapes) {
        m = decode_simple(d, s, e);
        if (m < 0)
            return -1;
    }
    else {
        m = e - s - 2;
        d->dec.n = 0;
        if (buf_put(&d->dec, d->b + s + 1, m) < 0)
            return -1;
        if (d->mapcap < m + 1) {
            Py_ssize_t *map = PyMem_Realloc(d->map, (size_t)(m + 1) * sizeof(Py_ssize_t));
            if (map == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            d->map = map;
            d->mapcap = m + 1;
        }
        for (Py_ssize_t i = 0; i <= m; i++)
            d->map[i] = s + 1 + i;
    }
    if (scan(d, m, h) < 0)
        return -1;
    if (d->acc.n == 0)
        return 0;
    return render(d, s, e);
}

/* ------------------------------------------------------------------ syntax */

#define WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

static Py_ssize_t
skip_ws(drv_t *d, Py_ssize_t p)
{
    while (p < d->n && WS(d->b[p]))
        p++;
    return p;
}

/* End of the string token starting at body[s] == '"', or GIVE_UP. */
static Py_ssize_t
string_end(drv_t *d, Py_ssize_t s)
{
    Py_ssize_t p = s + 1;
    while (p < d->n) {
        unsigned char c = (unsigned char)d->b[p];
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return GIVE_UP; /* json.loads(strict=True) refuses it: the engine decides */
        if (c == '\\') {
            if (p + 1 >= d->n)
                return GIVE_UP;
            char x = d->b[p + 1];
            if (x == 'u') {
                if (p + 5 >= d->n)
                    return GIVE_UP;
                for (int k = 2; k < 6; k++) {
                    char h = d->b[p + k];
                    if (!(GH_DIGIT(h) || ((h | 0x20) >= 'a' && (h | 0x20) <= 'f')))
                        return GIVE_UP;
                }
                p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", x) || x == 0)
                return GIVE_UP;
            p += 2;
            continue;
        }
        p++;
    }
    return GIVE_UP;
}

/* End of the number token at body[s], or GIVE_UP; *is_int set when it has no
 * fraction or exponent, *digits to its digit count. */
static Py_ssize_t
number_end(drv_t *d, Py_ssize_t s, int *is_int, Py_ssize_t *digits)
{
    Py_ssize_t p = s;
    if (p < d->n && d->b[p] == '-')
        p++;
    if (p >= d->n || !GH_DIGIT(d->b[p]))
        return GIVE_UP;
    Py_ssize_t ds = p;
    if (d->b[p] == '0')
        p++;
    else
        while (p < d->n && GH_DIGIT(d->b[p]))
            p++;
    *digits = p - ds;
    *is_int = 1;
    if (p < d->n && d->b[p] == '.') {
        p++;
        if (p >= d->n || !GH_DIGIT(d->b[p]))
            return GIVE_UP;
        while (p < d->n && GH_DIGIT(d->b[p]))
            p++;
        *is_int = 0;
    }
    if (p < d->n && (d->b[p] | 0x20) == 'e') {
        p++;
        if (p < d->n && (d->b[p] == '+' || d->b[p] == '-'))
            p++;
        if (p >= d->n || !GH_DIGIT(d->b[p]))
            return GIVE_UP;
        while (p < d->n && GH_DIGIT(d->b[p]))
            p++;
        *is_int = 0;
    }
    if (*digits > MAX_INT_DIGITS)
        return GIVE_UP;
    return p;
}

static Py_ssize_t value(drv_t *d, Py_ssize_t p, Py_ssize_t lead, const hint_t *h, int depth);

static int
path_push(drv_t *d, const char *s, Py_ssize_t len, Py_ssize_t *mark)
{
    *mark = d->path.n;
    return buf_put(&d->path, s, len);
}

/* key_info of the raw key body[s+1:e-1), memoised in the plan's dict and in the
 * call's key slots. Returns a new reference to (flags, suffix, hint) or NULL. */
static PyObject *key_entry_memo(drv_t *d, Py_ssize_t s, Py_ssize_t e);

static PyObject *
key_entry(drv_t *d, Py_ssize_t s, Py_ssize_t e)
{
    const char *raw = d->b + s + 1;
    Py_ssize_t len = e - s - 2;
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)raw[i]) * 16777619u;
    for (int probe = 0; probe < 8; probe++) {
        key_slot *k = &d->keys[(h + (uint32_t)probe) % KEY_SLOTS];
        if (k->ent == NULL) {
            PyObject *ent = key_entry_memo(d, s, e);
            if (ent != NULL) {
                k->raw = raw;
                k->len = len;
                k->ent = Py_NewRef(ent);
            }
            return ent;
        }
        if (k->len == len && memcmp(k->raw, raw, (size_t)len) == 0)
            return Py_NewRef(k->ent);
    }
    return key_entry_memo(d, s, e);
}

static PyObject *
key_entry_memo(drv_t *d, Py_ssize_t s, Py_ssize_t e)
{
    PyObject *raw = PyBytes_FromStringAndSize(d->b + s + 1, e - s - 2);
    if (raw == NULL)
        return NULL;
    PyObject *ent = PyDict_GetItemWithError(d->key_memo, raw);
    if (ent == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(raw);
            return NULL;
        }
        ent = PyObject_CallOneArg(d->key_info, raw);
        if (ent == NULL) {
            Py_DECREF(raw);
            return NULL;
        }
        if (!PyTuple_Check(ent) || PyTuple_GET_SIZE(ent) != 3 ||
            !PyLong_Check(PyTuple_GET_ITEM(ent, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(ent, 1)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(ent, 2))) {
            Py_DECREF(ent);
            Py_DECREF(raw);
            PyErr_SetString(PyExc_TypeError, "key_info must return (int, bytes, bytes)");
            return NULL;
        }
        if (PyDict_SetItem(d->key_memo, raw, ent) < 0) {
            Py_DECREF(ent);
            Py_DECREF(raw);
            return NULL;
        }
    }
    else
        Py_INCREF(ent);
    Py_DECREF(raw);
    return ent; /* a new reference: the memo may be cleared by another thread while a
                 * callback of this call runs */
}

static Py_ssize_t
object(drv_t *d, Py_ssize_t p, int depth)
{
    p = skip_ws(d, p + 1);
    if (p < d->n && d->b[p] == '}')
        return p + 1;
    for (;;) {
        if (p >= d->n || d->b[p] != '"')
            return GIVE_UP;
        Py_ssize_t ke = string_end(d, p);
        if (ke < 0)
            return ke;
        PyObject *ent = key_entry(d, p, ke);
        if (ent == NULL)
            return -1;
        hint_t h;
        h.flags = (int)PyLong_AsLong(PyTuple_GET_ITEM(ent, 0));
        PyObject *suffix = PyTuple_GET_ITEM(ent, 1), *hint = PyTuple_GET_ITEM(ent, 2);
        h.hint = PyBytes_AS_STRING(hint);
        h.hn = PyBytes_GET_SIZE(hint);
        Py_ssize_t mark;
        p = skip_ws(d, ke);
        if (h.flags & KEY_MASKED)
            p = GIVE_UP; /* the full walk renames masked keys */
        else if (p >= d->n || d->b[p] != ':')
            p = GIVE_UP;
        else if (path_push(d, PyBytes_AS_STRING(suffix), PyBytes_GET_SIZE(suffix), &mark) < 0)
            p = -1;
        else {
            p = value(d, skip_ws(d, p + 1), ke - 1, &h, depth + 1);
            d->path.n = mark;
        }
        Py_DECREF(ent); /* h's pointers are not used after this */
        if (p < 0)
            return p;
        p = skip_ws(d, p);
        if (p >= d->n)
            return GIVE_UP;
        if (d->b[p] == ',')
            p = skip_ws(d, p + 1);
        else if (d->b[p] == '}')
            return p + 1;
        else
            return GIVE_UP;
    }
}

static Py_ssize_t
array(drv_t *d, Py_ssize_t p, const hint_t *h, int depth)
{
    Py_ssize_t lead = p;
    p = skip_ws(d, p + 1);
    if (p < d->n && d->b[p] == ']')
        return p + 1;
    for (Py_ssize_t i = 0;; i++) {
        char idx[32], *q = idx + sizeof idx;
        *--q = ']';
        size_t u = (size_t)i;
        do
            *--q = (char)('0' + u % 10);
        while (u /= 10);
        *--q = '[';
        Py_ssize_t len = idx + sizeof idx - q;
        Py_ssize_t mark;
        if (path_push(d, q, len, &mark) < 0)
            return -1;
        Py_ssize_t end = value(d, p, lead, h, depth + 1);
        d->path.n = mark;
        if (end < 0)
            return end;
        lead = end - 1;
        p = skip_ws(d, end);
        if (p >= d->n)
            return GIVE_UP;
        if (d->b[p] == ',')
            p = skip_ws(d, p + 1);
        else if (d->b[p] == ']')
            return p + 1;
        else
            return GIVE_UP;
    }
}

static int
literal(drv_t *d, Py_ssize_t p, const char *word)
{
    Py_ssize_t len = (Py_ssize_t)strlen(word);
    return p + len <= d->n && memcmp(d->b + p, word, (size_t)len) == 0;
}

/* The value at body[p] (after whitespace); `lead` is where the previous token
 * ended (jsonnav.Navigator._value); `h` the key it is stored under (arrays pass
 * theirs on, as the Python walk does). Returns its end, -1 (exception) or GIVE_UP. */
static Py_ssize_t
value(drv_t *d, Py_ssize_t p, Py_ssize_t lead, const hint_t *h, int depth)
{
    if (p >= d->n)
        return GIVE_UP;
    if (depth > MAX_DEPTH)
        return GIVE_UP;
    char c = d->b[p];
    if (c == '{')
        return object(d, p, depth);
    if (c == '[')
        return array(d, p, h, depth);
    if (c == '"') {
        Py_ssize_t e = string_end(d, p);
        if (e < 0)
            return e;
        if (string_value(d, lead, p, e, h) < 0)
            return -1;
        return e;
    }
    if (c == '-' || GH_DIGIT(c)) {
        int is_int;
        Py_ssize_t digits;
        Py_ssize_t e = number_end(d, p, &is_int, &digits);
        if (e < 0)
            return e;
        /* _Walk.integer: integers of 6+ digits under a phone-like key or of a
         * length a detector reads */
        if (is_int && digits >= 6 &&
            ((h && (h->flags & KEY_PHONE)) ||
             (digits < 64 && (d->int_lengths >> digits) & 1))) {
            PyObject *token = PyUnicode_FromStringAndSize(d->b + p, e - p);
            PyObject *hint = token == NULL ? NULL
                             : h       ? PyUnicode_DecodeUTF8(h->hint, h->hn, "strict")
                                       : PyUnicode_New(0, 0);
            if (hint == NULL) {
                Py_XDECREF(token);
                return -1;
            }
            PyObject *res = PyObject_CallFunctionObjArgs(d->delegate_int, token, hint, NULL);
            Py_DECREF(token);
            Py_DECREF(hint);
            if (apply_delegated(d, p, e, res) < 0)
                return -1;
        }
        return e;
    }
    if (literal(d, p, "true"))
        return p + 4;
    if (literal(d, p, "false"))
        return p + 5;
    if (literal(d, p, "null"))
        return p + 4;
    return GIVE_UP; /* NaN, Infinity or not JSON: the engine decides */
}

/* ------------------------------------------------------------------ entry point */

static int
load_plan(drv_t *d, PyObject *plan)
{
    PyObject *types, *fixed, *phone;
    unsigned long long lengths;
    PyObject *finding;
    if (!PyArg_ParseTuple(plan, "O!O!OOOOO!OKnO!:plan", &PyTuple_Type, &types, &PyTuple_Type,
                          &fixed, &d->placeholder, &d->delegate_str, &d->delegate_int,
                          &d->key_info, &PyDict_Type, &d->key_memo, &phone, &lengths,
                          &d->max_chars, &PyType_Type, &finding))
        return -1;
    d->finding = (PyTypeObject *)finding;
    if (!PyType_IsSubtype(d->finding, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "bad plan: Finding must be a named tuple");
        return -1;
    }
    d->int_lengths = lengths;
    d->ntypes = (int)PyTuple_GET_SIZE(types);
    if (d->ntypes > GH_NTYPES || PyTuple_GET_SIZE(fixed) != GH_NTYPES) {
        PyErr_SetString(PyExc_ValueError, "bad plan");
        return -1;
    }
    for (int i = 0; i < d->ntypes; i++) {
        long t = PyLong_AsLong(PyTuple_GET_ITEM(types, i));
        if (t < 0 || t >= GH_NTYPES) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bad plan: unknown type");
            return -1;
        }
        d->types[i] = (int)t;
        if (t == GH_PHONE) {
            if (phone == Py_None) {
                PyErr_SetString(PyExc_ValueError, "bad plan: PHONE without its detector");
                return -1;
            }
            d->phone_ctx = gh_phone_context(phone);
            if (d->phone_ctx == NULL)
                return -1;
        }
    }
    for (int i = 0; i < GH_NTYPES; i++) {
        PyObject *f = PyTuple_GET_ITEM(fixed, i);
        d->fixed[i] = PyBytes_Check(f) ? f : NULL;
    }
    return 0;
}

PyDoc_STRVAR(mask_json_doc,
"mask_json(body, plan, events, root='$') -> None | tuple[bytes | None, list[Finding]]\n\n"
"Mask a UTF-8 JSON document (bytes) with the C finders; see driver.c for ``plan``.\n"
"Finding locations start with ``root`` (``ndjson[3]$`` for a line of NDJSON).\n"
"``events`` are the ascending byte offsets of matches of the gates of detectors\n"
"without a C finder: strings holding one are delegated to Python.\n\n"
"Returns None when the document must take the engine's Python path (syntax the\n"
"driver does not decide, a key to mask), else ``(masked_body, findings)`` with\n"
"``masked_body`` None when nothing changed and ``findings`` the plan's Finding\n"
"``(entity_type, json_path)`` in document order. Exceptions of the callbacks\n"
"and MaskingError of the finders propagate.");

static PyObject *
mask_json(PyObject *self, PyObject *args)
{
    Py_buffer body;
    PyObject *plan, *events;
    const char *root = "$";
    Py_ssize_t root_len = 1;
    if (!PyArg_ParseTuple(args, "y*O!O!|s#:mask_json", &body, &PyTuple_Type, &plan,
                          &PyList_Type, &events, &root, &root_len))
        return NULL;
    drv_t d;
    memset(&d, 0, sizeof d);
    d.b = body.buf;
    d.n = body.len;
    d.events = events;
    d.nev = PyList_GET_SIZE(events);
    PyObject *result = NULL;
    if (load_plan(&d, plan) < 0)
        goto done;
    d.findings = PyList_New(0);
    if (d.findings == NULL || buf_put(&d.path, root, root_len) < 0)
        goto done;
    Py_ssize_t p = skip_ws(&d, 0);
    Py_ssize_t end = value(&d, p, 0, NULL, 0);
    if (end == -1)
        goto done;
    if (end == GIVE_UP || skip_ws(&d, end) != d.n) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *out;
    if (d.out.n == 0 && d.copied == 0)
        out = Py_NewRef(Py_None);
    else {
        if (flush_to(&d, d.n) < 0)
            goto done;
        out = PyBytes_FromStringAndSize(d.out.p, d.out.n);
        if (out == NULL)
            goto done;
    }
    result = PyTuple_Pack(2, out, d.findings);
    Py_DECREF(out);
done:
    for (int i = 0; i < KEY_SLOTS; i++)
        Py_XDECREF(d.keys[i].ent);
    Py_XDECREF(d.findings);
    PyMem_Free(d.out.p);
    PyMem_Free(d.path.p);
    PyMem_Free(d.dec.p);
    PyMem_Free(d.view.p);
    PyMem_Free(d.map);
    gh_dets_free(&d.acc);
    gh_dets_free(&d.tmp);
    gh_dets_free(&d.merged);
    PyBuffer_Release(&body);
    return result;
}

PyDoc_STRVAR(scan_doc,
"scan(text, types, hint, phone_detector, detection) -> list\n\n"
"``Masker._scan_uncached`` over the C finders ``types`` (GH_* numbers, priority\n"
"order) on an ASCII ``text``: each finder reads the text with the detections\n"
"accepted so far blanked out, and keeps what overlaps none of them. Returns\n"
"``detection`` instances (the engine's Detection named tuple), sorted by start.\n"
"The whole text is read (the Python detectors read windows around their gate\n"
"matches in long texts; a window holds every detection near its gate match).\n\n"
"Raises ValueError for non-ASCII text or hint, MaskingError as the finders do.");

static PyObject *
scan_text(PyObject *self, PyObject *args)
{
    PyObject *text, *types, *phone, *cls_obj, *hint;
    if (!PyArg_ParseTuple(args, "UO!UOO!:scan", &text, &PyTuple_Type, &types, &hint, &phone,
                          &PyType_Type, &cls_obj))
        return NULL;
    PyTypeObject *cls = (PyTypeObject *)cls_obj;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "detection must be a tuple class");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text) || !PyUnicode_IS_ASCII(hint)) {
        PyErr_SetString(PyExc_ValueError, "scan takes ASCII text and hint");
        return NULL;
    }
    drv_t *d = PyMem_Calloc(1, sizeof(drv_t));
    if (d == NULL)
        return PyErr_NoMemory();
    PyObject *res = NULL;
    d->ntypes = (int)PyTuple_GET_SIZE(types);
    if (d->ntypes > GH_NTYPES) {
        PyErr_SetString(PyExc_ValueError, "too many types");
        goto done;
    }
    for (int i = 0; i < d->ntypes; i++) {
        long t = PyLong_AsLong(PyTuple_GET_ITEM(types, i));
        if (t < 0 || t >= GH_NTYPES) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "unknown type");
            goto done;
        }
        d->types[i] = (int)t;
        if (t == GH_PHONE) {
            if (phone == Py_None) {
                PyErr_SetString(PyExc_ValueError, "PHONE without its detector");
                goto done;
            }
            if ((d->phone_ctx = gh_phone_context(phone)) == NULL)
                goto done;
        }
    }
    Py_ssize_t m = PyUnicode_GET_LENGTH(text);
    if (buf_put(&d->dec, (const char *)PyUnicode_DATA(text), m) < 0)
        goto done;
    hint_t h = {0, (const char *)PyUnicode_DATA(hint), PyUnicode_GET_LENGTH(hint)};
    if (scan(d, m, &h) < 0)
        goto done;
    res = PyList_New(d->acc.n);
    if (res == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < d->acc.n; i++) {
        gh_det *x = &d->acc.v[i];
        PyObject *start = PyLong_FromSsize_t(x->start), *end = PyLong_FromSsize_t(x->end);
        PyObject *det = start && end ? cls->tp_alloc(cls, 4) : NULL;
        if (det == NULL) {
            Py_XDECREF(start);
            Py_XDECREF(end);
            Py_CLEAR(res);
            goto done;
        }
        PyTuple_SET_ITEM(det, 0, start);
        PyTuple_SET_ITEM(det, 1, end);
        PyTuple_SET_ITEM(det, 2, Py_NewRef(gh_type_name(x->type)));
        PyTuple_SET_ITEM(det, 3, Py_NewRef(x->normalised));
        PyObject_GC_UnTrack(det); /* ints and strs: no cycle */
        PyList_SET_ITEM(res, i, det);
    }
done:
    PyMem_Free(d->dec.p);
    PyMem_Free(d->view.p);
    gh_dets_free(&d->acc);
    gh_dets_free(&d->tmp);
    gh_dets_free(&d->merged);
    PyMem_Free(d);
    return res;
}

PyMethodDef gh_driver_methods[] = {
    {"mask_json", mask_json, METH_VARARGS, mask_json_doc},
    {"scan", scan_text, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

int
gh_driver_init(PyObject *module)
{
    return PyModule_AddIntConstant(module, "KEY_FORCE", KEY_FORCE) ||
                   PyModule_AddIntConstant(module, "KEY_PHONE", KEY_PHONE) ||
                   PyModule_AddIntConstant(module, "KEY_MASKED", KEY_MASKED) ||
                   PyModule_AddIntConstant(module, "KEY_NONASCII", KEY_NONASCII)
               ? -1
               : 0;
}
