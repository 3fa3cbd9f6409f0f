/* PhoneDetector in C (see accel.h): proxy_worker/masking/phone.py on ASCII text.
 *
 * The text side (candidate runs, tokens, windows, dates, times, extensions) is
 * plain C. The numbering-plan side (is_valid_number and the _Region methods)
 * is ported as control flow in C, but every metadata pattern is still the
 * compiled Python regex of phone.py (called through cached bound methods), so
 * the plans stay exactly libphonenumber's. Patterns that are plain digit
 * literals (most international and national prefixes) are tested in C.
 *
 * Tables come from phone.py's _accel_* helpers: one gh_region per _Region
 * object and one gh_cc per calling code (module-wide, built on first use, kept
 * for the life of the process), and one gh_phone_ctx per PhoneDetector.
 * Every call runs with the GIL held.
 */
#include "accel.h"

#include <string.h>

/* Longest digit string handled (numbers are at most 18 digits; a national
 * prefix transform may add a few). */
#define PH_BUF 64
/* Most region filters (distinct national filters) a detector can have: one per
 * region libphonenumber knows is about 250. */
#define PH_MAX_PATS 512
#define MIN_NSN 2          /* _MIN_NSN */
#define MAX_NSN 17         /* _MAX_NSN */
#define MAX_CC_LEN 3       /* _MAX_CC_LEN */
#define MIN_INTL_DIGITS 6  /* _MIN_INTL_DIGITS */
#define MAX_DIGITS 15      /* _MAX_DIGITS */
#define MAX_TOKENS 6       /* _MAX_TOKENS */
#define BUDGET_MIN 512     /* _BUDGET_MIN */
#define BUDGET_CHARS 8     /* _BUDGET_CHARS */

/* ================================================================== characters */

/* str.isspace() / re's \s on ASCII: \t\n\v\f\r, \x1c-\x1f and space. */
static inline int
py_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* _PHONE_RUN_RE's class [\d().\-/ \t] (ASCII part). */
static inline int
run_char(unsigned char c)
{
    return GH_DIGIT(c) || c == '(' || c == ')' || c == '.' || c == '-' || c == '/' || c == ' ' ||
           c == '\t';
}

/* Characters of _PUNCT_DROP (ASCII part). */
static inline int
punct_drop(unsigned char c)
{
    return c == '(' || c == ')' || c == '+' || c == '.' || c == '-' || c == '/';
}

static inline int
dot_dash_slash(unsigned char c)
{
    return c == '.' || c == '-' || c == '/';
}

/* ================================================================== Python calls */

static PyObject *MaskingError;   /* proxy_worker.masking.errors.MaskingError */
static PyObject *py_accel_region; /* phone._accel_region */
static PyObject *py_accel_cc;     /* phone._accel_cc */
static PyObject *py_accel_detector; /* phone._accel_detector */
static PyObject *py_region;         /* phone._region */
static PyObject *str_end, *str_group, *str_lastindex, *kw_count;

static PyObject *
ascii_str(const char *s, Py_ssize_t n)
{
    PyObject *o = PyUnicode_New(n, 127);
    if (o != NULL)
        memcpy(PyUnicode_DATA(o), s, (size_t)n);
    return o;
}

/* fn(str(s)): a new reference or NULL. */
static PyObject *
call_str(PyObject *fn, const char *s, Py_ssize_t n)
{
    PyObject *arg = ascii_str(s, n);
    if (arg == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(fn, &arg, 1, NULL);
    Py_DECREF(arg);
    return r;
}

/* m.end() of a match object: >= 0, or -1 with an exception. */
static Py_ssize_t
match_end(PyObject *m)
{
    PyObject *args[1] = {m};
    PyObject *e = PyObject_VectorcallMethod(str_end, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                            NULL);
    if (e == NULL)
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(e);
    Py_DECREF(e);
    return v;
}

/* Copy an ASCII str result into buf (PH_BUF). Length or -1 with an exception. */
static Py_ssize_t
copy_ascii(PyObject *s, char *buf)
{
    if (!PyUnicode_Check(s) || !PyUnicode_IS_ASCII(s) || PyUnicode_GET_LENGTH(s) >= PH_BUF) {
        PyErr_SetString(PyExc_RuntimeError, "phone accelerator: unexpected number string");
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    memcpy(buf, PyUnicode_DATA(s), (size_t)n);
    return n;
}

/* ------------------------------------------------------------------ per-candidate memo
 * The Python code keeps a memo per candidate (is_valid_number's `memo`: the
 * international part and _valid_for_cc of each calling code). Here every
 * metadata regex call of one candidate is memoised instead, keyed by the bound
 * method and the string, which covers those and the repeated full-matches
 * (general description, formats of a shared main region). */

#define MEMO_SIZE 48

typedef struct {
    PyObject *fn;
    Py_ssize_t len;
    Py_ssize_t res;
    char s[PH_BUF];
} memo_ent;

typedef struct {
    int n;
    memo_ent e[MEMO_SIZE];
} gh_memo;

static int
memo_get(gh_memo *m, PyObject *fn, const char *s, Py_ssize_t n, Py_ssize_t *res)
{
    for (int i = 0; i < m->n; i++) {
        memo_ent *e = &m->e[i];
        if (e->fn == fn && e->len == n && memcmp(e->s, s, (size_t)n) == 0) {
            *res = e->res;
            return 1;
        }
    }
    return 0;
}

static void
memo_put(gh_memo *m, PyObject *fn, const char *s, Py_ssize_t n, Py_ssize_t res)
{
    if (m->n == MEMO_SIZE || n >= PH_BUF)
        return;
    memo_ent *e = &m->e[m->n++];
    e->fn = fn;
    e->len = n;
    e->res = res;
    memcpy(e->s, s, (size_t)n);
}

/* pattern.fullmatch(s) is not None: 1 / 0 / -1. */
static int
rx_full(gh_memo *memo, PyObject *fullmatch, const char *s, Py_ssize_t n)
{
    Py_ssize_t res;
    if (memo_get(memo, fullmatch, s, n, &res))
        return (int)res;
    PyObject *m = call_str(fullmatch, s, n);
    if (m == NULL)
        return -1;
    res = m != Py_None;
    Py_DECREF(m);
    memo_put(memo, fullmatch, s, n, res);
    return (int)res;
}

/* pattern.match(s): the match's end, -1 for no match, -2 on error. */
static Py_ssize_t
rx_match_end(gh_memo *memo, PyObject *match, const char *s, Py_ssize_t n)
{
    Py_ssize_t res;
    if (memo_get(memo, match, s, n, &res))
        return res;
    PyObject *m = call_str(match, s, n);
    if (m == NULL)
        return -2;
    if (m == Py_None)
        res = -1;
    else if ((res = match_end(m)) < 0)
        res = -2;
    Py_DECREF(m);
    if (res == -2)
        return -2;
    memo_put(memo, match, s, n, res);
    return res;
}

/* ================================================================== metadata tables */

/* Set of small non-negative ints (lengths); larger or negative values never
 * equal a string length here and are left out. */
typedef unsigned long long lenset;

static int
lenset_from(PyObject *seq, lenset *out)
{
    PyObject *fast = PySequence_Fast(seq, "lengths");
    if (fast == NULL)
        return -1;
    *out = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        if (v >= 0 && v < 64)
            *out |= 1ULL << v;
    }
    Py_DECREF(fast);
    return 0;
}

static inline int
lenset_has(lenset s, Py_ssize_t n)
{
    return n >= 0 && n < 64 && (s >> n) & 1;
}

/* _Desc: (possible lengths, pattern). */
typedef struct {
    int has_lengths; /* the frozenset is not empty */
    lenset lengths;
    PyObject *fullmatch;
} gh_desc;

typedef struct {
    PyObject *lead_match; /* or NULL */
    PyObject *fullmatch;
    int required;
} gh_format;

/* _Region */
typedef struct {
    PyObject *obj; /* the _Region (strong reference): registry key */
    int cc;
    char ccs[8];
    int ccl;
    int has_general;
    gh_desc general;
    PyObject *types_any; /* fullmatch or NULL */
    int ntypes;
    gh_desc *types;
    /* national_prefix_for_parsing */
    PyObject *npp_match, *npp_sub; /* NULL: no national prefix */
    Py_ssize_t npp_groups;
    char npp_lit[PH_BUF];
    int npp_lit_len; /* >= 0: the pattern is this digit literal */
    PyObject *transform; /* re.sub template or NULL */
    /* international_prefix */
    PyObject *idd_match; /* NULL: none */
    char idd_lit[PH_BUF];
    int idd_lit_len;
    int npossible;
    long possible[32]; /* sorted */
    lenset local_lengths;
    int nformats;
    gh_format *formats;
    int last_required; /* index of the last format with `required`, -1: none */
    lenset max_input;
} gh_region;

/* One step of _cc_plan: a region on its own (match == NULL) or an alternation
 * of leading digits whose matching branch picks the region. */
typedef struct {
    PyObject *match;
    Py_ssize_t nowner;
    int *owner; /* m.lastindex -> index in regs, -1: none */
    int nregs;
    gh_region **regs;
} gh_step;

/* _cc_regions(cc) and _cc_plan(cc) */
typedef struct {
    int nregs;
    gh_region **regs;
    int nsteps;
    gh_step *steps;
} gh_cc;

static gh_region **registry;
static Py_ssize_t nregistry, capregistry;
static gh_cc *cc_table[1000];

static int
load_desc(PyObject *t, gh_desc *d)
{
    /* (lengths tuple, fullmatch) */
    PyObject *lengths = PyTuple_GET_ITEM(t, 0);
    d->has_lengths = PyTuple_GET_SIZE(lengths) > 0;
    if (lenset_from(lengths, &d->lengths) < 0)
        return -1;
    d->fullmatch = Py_NewRef(PyTuple_GET_ITEM(t, 1));
    return 0;
}

static int
literal_into(PyObject *lit, char *buf, int *len)
{
    *len = -1;
    if (lit == Py_None)
        return 0;
    Py_ssize_t n = copy_ascii(lit, buf);
    if (n < 0)
        return -1;
    *len = (int)n;
    return 0;
}

static int
check_tuple(PyObject *o, Py_ssize_t n)
{
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != n) {
        PyErr_SetString(PyExc_RuntimeError, "phone accelerator: unexpected table from phone.py");
        return -1;
    }
    return 0;
}

/* Fill r from _accel_region(r->obj). */
static int
region_load(gh_region *r)
{
    PyObject *t = PyObject_CallOneArg(py_accel_region, r->obj);
    if (t == NULL)
        return -1;
    int rc = -1;
    if (check_tuple(t, 11) < 0)
        goto done;
    r->cc = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    if (r->cc < 0 || r->cc > 999) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "phone accelerator: bad calling code");
        goto done;
    }
    r->ccl = snprintf(r->ccs, sizeof r->ccs, "%d", r->cc);
    PyObject *general = PyTuple_GET_ITEM(t, 1);
    r->has_general = general != Py_None;
    if (r->has_general && load_desc(general, &r->general) < 0)
        goto done;
    PyObject *any = PyTuple_GET_ITEM(t, 2);
    r->types_any = any == Py_None ? NULL : Py_NewRef(any);
    PyObject *types = PyTuple_GET_ITEM(t, 3);
    r->types = PyMem_Calloc((size_t)PyTuple_GET_SIZE(types) + 1, sizeof(gh_desc));
    if (r->types == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(types); i++) {
        if (load_desc(PyTuple_GET_ITEM(types, i), &r->types[i]) < 0)
            goto done;
        r->ntypes++;
    }
    PyObject *npp = PyTuple_GET_ITEM(t, 4);
    r->npp_lit_len = -1;
    if (npp != Py_None) {
        r->npp_match = Py_NewRef(PyTuple_GET_ITEM(npp, 0));
        r->npp_groups = PyLong_AsSsize_t(PyTuple_GET_ITEM(npp, 1));
        r->npp_sub = Py_NewRef(PyTuple_GET_ITEM(npp, 2));
        if (literal_into(PyTuple_GET_ITEM(npp, 3), r->npp_lit, &r->npp_lit_len) < 0)
            goto done;
    }
    PyObject *tr = PyTuple_GET_ITEM(t, 5);
    r->transform = tr == Py_None ? NULL : Py_NewRef(tr);
    PyObject *idd = PyTuple_GET_ITEM(t, 6);
    r->idd_lit_len = -1;
    if (idd != Py_None) {
        r->idd_match = Py_NewRef(PyTuple_GET_ITEM(idd, 0));
        if (literal_into(PyTuple_GET_ITEM(idd, 1), r->idd_lit, &r->idd_lit_len) < 0)
            goto done;
    }
    PyObject *possible = PyTuple_GET_ITEM(t, 7);
    if (PyTuple_GET_SIZE(possible) > 32) {
        PyErr_SetString(PyExc_RuntimeError, "phone accelerator: too many possible lengths");
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(possible); i++) {
        r->possible[i] = PyLong_AsLong(PyTuple_GET_ITEM(possible, i));
        r->npossible++;
    }
    if (lenset_from(PyTuple_GET_ITEM(t, 8), &r->local_lengths) < 0)
        goto done;
    PyObject *formats = PyTuple_GET_ITEM(t, 9);
    r->formats = PyMem_Calloc((size_t)PyTuple_GET_SIZE(formats) + 1, sizeof(gh_format));
    if (r->formats == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(formats); i++) {
        PyObject *f = PyTuple_GET_ITEM(formats, i);
        PyObject *lead = PyTuple_GET_ITEM(f, 0);
        r->formats[i].lead_match = lead == Py_None ? NULL : Py_NewRef(lead);
        r->formats[i].fullmatch = Py_NewRef(PyTuple_GET_ITEM(f, 1));
        r->formats[i].required = PyObject_IsTrue(PyTuple_GET_ITEM(f, 2));
        r->nformats++;
    }
    r->last_required = -1;
    for (int i = 0; i < r->nformats; i++)
        if (r->formats[i].required)
            r->last_required = i;
    if (lenset_from(PyTuple_GET_ITEM(t, 10), &r->max_input) < 0)
        goto done;
    rc = PyErr_Occurred() ? -1 : 0;
done:
    Py_DECREF(t);
    return rc;
}

/* The gh_region of a _Region object (borrowed; built on first use). A region
 * that failed to load stays in the registry half-filled but is never
 * returned: the error propagates and the compile fails. */
static gh_region *
region_get(PyObject *obj)
{
    for (Py_ssize_t i = 0; i < nregistry; i++)
        if (registry[i]->obj == obj)
            return registry[i];
    gh_region *r = PyMem_Calloc(1, sizeof(gh_region));
    if (r == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    r->obj = Py_NewRef(obj);
    if (region_load(r) < 0)
        return NULL; /* leaked on purpose: partial, and errors here are fatal anyway */
    if (nregistry == capregistry) {
        Py_ssize_t cap = capregistry ? capregistry * 2 : 64;
        gh_region **v = PyMem_Realloc(registry, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        registry = v;
        capregistry = cap;
    }
    registry[nregistry++] = r;
    return r;
}

static gh_region **
regions_of(PyObject *tuple, int *count)
{
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    gh_region **v = PyMem_Calloc((size_t)n + 1, sizeof(*v));
    if (v == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        v[i] = region_get(PyTuple_GET_ITEM(tuple, i));
        if (v[i] == NULL) {
            PyMem_Free(v);
            return NULL;
        }
    }
    *count = (int)n;
    return v;
}

/* _cc_regions(cc) / _cc_plan(cc) (borrowed; built on first use). */
static gh_cc *
cc_get(int cc)
{
    if (cc_table[cc] != NULL)
        return cc_table[cc];
    PyObject *t = PyObject_CallFunction(py_accel_cc, "i", cc);
    if (t == NULL)
        return NULL;
    gh_cc *c = NULL;
    if (check_tuple(t, 2) < 0)
        goto fail;
    c = PyMem_Calloc(1, sizeof(gh_cc));
    if (c == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if ((c->regs = regions_of(PyTuple_GET_ITEM(t, 0), &c->nregs)) == NULL)
        goto fail;
    PyObject *plan = PyTuple_GET_ITEM(t, 1);
    c->steps = PyMem_Calloc((size_t)PyTuple_GET_SIZE(plan) + 1, sizeof(gh_step));
    if (c->steps == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
        PyObject *st = PyTuple_GET_ITEM(plan, i);
        gh_step *s = &c->steps[i];
        PyObject *match = PyTuple_GET_ITEM(st, 0), *owner = PyTuple_GET_ITEM(st, 1);
        if ((s->regs = regions_of(PyTuple_GET_ITEM(st, 2), &s->nregs)) == NULL)
            goto fail;
        c->nsteps++;
        if (match != Py_None) {
            s->match = Py_NewRef(match);
            s->nowner = PyTuple_GET_SIZE(owner);
            s->owner = PyMem_Calloc((size_t)s->nowner + 1, sizeof(int));
            if (s->owner == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            for (Py_ssize_t k = 0; k < s->nowner; k++)
                s->owner[k] = (int)PyLong_AsLong(PyTuple_GET_ITEM(owner, k));
        }
    }
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(t);
    cc_table[cc] = c;
    return c;
fail:
    /* a partly built entry is dropped (its references leak: errors are fatal) */
    Py_DECREF(t);
    return NULL;
}

/* ================================================================== _Region methods */

/* _matches(nsn, d): lengths, then the pattern. */
static int
desc_matches(gh_memo *memo, const gh_desc *d, const char *s, Py_ssize_t n)
{
    if (d->has_lengths && !lenset_has(d->lengths, n))
        return 0;
    return rx_full(memo, d->fullmatch, s, n);
}

/* _matches_pattern(number, general): the pattern only. */
static int
general_pattern(gh_memo *memo, const gh_region *r, const char *s, Py_ssize_t n)
{
    return r->has_general ? rx_full(memo, r->general.fullmatch, s, n) : 0;
}

/* _Region.valid: general description, then one number type (lengths and
 * pattern). types_any is the alternation of every type's pattern, so when no
 * type's lengths rule the number out, its one full-match is the answer;
 * otherwise only the types with a fitting length are tried (any order gives
 * the same answer: fixed line and mobile, the most common, are last in
 * _TYPES and tried first). */
static int
region_valid(gh_memo *memo, const gh_region *r, const char *nsn, Py_ssize_t n)
{
    if (!r->has_general)
        return 0;
    int ok = desc_matches(memo, &r->general, nsn, n);
    if (ok <= 0)
        return ok;
    if (r->types_any == NULL)
        return 0;
    int all_fit = 1, some_fit = 0;
    for (int i = 0; i < r->ntypes; i++) {
        int fit = !r->types[i].has_lengths || lenset_has(r->types[i].lengths, n);
        all_fit &= fit;
        some_fit |= fit;
    }
    if (!some_fit)
        return 0;
    ok = rx_full(memo, r->types_any, nsn, n);
    if (ok <= 0 || all_fit)
        return ok;
    for (int i = r->ntypes - 1; i >= 0; i--) {
        ok = desc_matches(memo, &r->types[i], nsn, n);
        if (ok != 0)
            return ok;
    }
    return 0;
}

/* _Region.prefix_required: the `required` flag of the first format whose
 * leading digits and pattern match. Formats after the last required one
 * cannot make the answer true and are not tried. */
static int
region_prefix_required(gh_memo *memo, const gh_region *r, const char *nsn, Py_ssize_t n)
{
    for (int i = 0; i <= r->last_required; i++) {
        const gh_format *f = &r->formats[i];
        if (f->lead_match != NULL) {
            Py_ssize_t e = rx_match_end(memo, f->lead_match, nsn, n);
            if (e == -2)
                return -1;
            if (e < 0)
                continue;
        }
        int ok = rx_full(memo, f->fullmatch, nsn, n);
        if (ok < 0)
            return -1;
        if (ok)
            return f->required;
    }
    return 0;
}

/* _Region.length_ok */
static int
region_length_ok(const gh_region *r, Py_ssize_t n)
{
    if (r->npossible == 0 || r->possible[0] == -1 || lenset_has(r->local_lengths, n))
        return 0;
    if (n < r->possible[0])
        return 0;
    if (n > r->possible[r->npossible - 1])
        return 1;
    for (int i = 0; i < r->npossible; i++)
        if (r->possible[i] == n)
            return 1;
    return 0;
}

/* _Region.strip_national_prefix: the result into out (PH_BUF); its length or -1. */
static Py_ssize_t
region_strip(gh_memo *memo, const gh_region *r, const char *num, Py_ssize_t n, char *out)
{
    if (n == 0 || r->npp_match == NULL)
        goto unchanged;
    Py_ssize_t end;
    PyObject *m = NULL;
    if (r->npp_lit_len >= 0) { /* a digit literal: startswith */
        if (n < r->npp_lit_len || memcmp(num, r->npp_lit, (size_t)r->npp_lit_len) != 0)
            goto unchanged;
        end = r->npp_lit_len;
    }
    else if (r->transform == NULL || r->npp_groups == 0) {
        end = rx_match_end(memo, r->npp_match, num, n);
        if (end == -2)
            return -1;
        if (end < 0)
            goto unchanged;
    }
    else {
        m = call_str(r->npp_match, num, n);
        if (m == NULL)
            return -1;
        if (m == Py_None) {
            Py_DECREF(m);
            goto unchanged;
        }
        end = match_end(m);
        if (end < 0) {
            Py_DECREF(m);
            return -1;
        }
    }
    int viable = general_pattern(memo, r, num, n);
    if (viable < 0) {
        Py_XDECREF(m);
        return -1;
    }
    Py_ssize_t sl;
    int transformed = 0;
    if (m != NULL) {
        /* groups[-1] is not None: the transform rule applies */
        PyObject *args[2] = {m, NULL};
        args[1] = PyLong_FromSsize_t(r->npp_groups);
        if (args[1] == NULL) {
            Py_DECREF(m);
            return -1;
        }
        PyObject *g = PyObject_VectorcallMethod(str_group, args,
                                                2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(args[1]);
        Py_DECREF(m);
        if (g == NULL)
            return -1;
        transformed = g != Py_None;
        Py_DECREF(g);
    }
    if (transformed) {
        /* npp.sub(transform, number, count=1) */
        PyObject *s = ascii_str(num, n);
        if (s == NULL)
            return -1;
        PyObject *one = PyLong_FromLong(1);
        if (one == NULL) {
            Py_DECREF(s);
            return -1;
        }
        PyObject *args[3] = {r->transform, s, one};
        PyObject *res = PyObject_Vectorcall(r->npp_sub, args, 2, kw_count);
        Py_DECREF(s);
        Py_DECREF(one);
        if (res == NULL)
            return -1;
        sl = copy_ascii(res, out);
        Py_DECREF(res);
        if (sl < 0)
            return -1;
    }
    else {
        sl = n - end;
        memmove(out, num + end, (size_t)sl);
    }
    if (viable) {
        int ok = general_pattern(memo, r, out, sl);
        if (ok < 0)
            return -1;
        if (!ok)
            goto unchanged;
    }
    return sl;
unchanged:
    memmove(out, num, (size_t)n);
    return n;
}

/* ================================================================== validation */

/* _valid_for_cc(cc, nsn): 1 / 0 / -1. */
static int
valid_for_cc(gh_memo *memo, int cc, const char *nsn, Py_ssize_t n)
{
    gh_cc *c = cc_get(cc);
    if (c == NULL)
        return -1;
    if (c->nregs == 0)
        return 0;
    if (c->nregs == 1)
        return region_valid(memo, c->regs[0], nsn, n);
    for (int i = 0; i < c->nsteps; i++) {
        gh_step *s = &c->steps[i];
        if (s->match == NULL) {
            int ok = region_valid(memo, s->regs[0], nsn, n);
            if (ok != 0)
                return ok;
            continue;
        }
        /* memoised as the picked region's index, -1: no match */
        Py_ssize_t pick;
        if (!memo_get(memo, s->match, nsn, n, &pick)) {
            PyObject *m = call_str(s->match, nsn, n);
            if (m == NULL)
                return -1;
            pick = -1;
            if (m != Py_None) {
                PyObject *li = PyObject_GetAttr(m, str_lastindex);
                Py_DECREF(m);
                if (li == NULL)
                    return -1;
                Py_ssize_t k = li == Py_None ? -1 : PyLong_AsSsize_t(li);
                Py_DECREF(li);
                if (k < 0 || k >= s->nowner || s->owner[k] < 0 || s->owner[k] >= s->nregs) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_RuntimeError,
                                        "phone accelerator: leading-digits plan without a region");
                    return -1;
                }
                pick = s->owner[k];
            }
            else
                Py_DECREF(m);
            memo_put(memo, s->match, nsn, n, pick);
        }
        if (pick >= 0)
            return region_valid(memo, s->regs[pick], nsn, n);
    }
    return 0;
}

/* "+{cc}{nsn}" into e164; its length. */
static Py_ssize_t
format_e164(int cc, const char *nsn, Py_ssize_t n, char *e164)
{
    int k = snprintf(e164, PH_BUF, "+%d", cc);
    memcpy(e164 + k, nsn, (size_t)n);
    return k + n;
}

/* _intl(digits): the E.164 form into e164; its length, 0 (not valid) or -1. */
static Py_ssize_t
intl(gh_memo *memo, const char *digits, Py_ssize_t n, char *e164)
{
    if (n == 0 || digits[0] == '0')
        return 0;
    for (int k = 1; k <= MAX_CC_LEN; k++) {
        int ccl = k < n ? k : (int)n;
        int cc = 0;
        for (int i = 0; i < ccl; i++)
            cc = cc * 10 + (digits[i] - '0');
        gh_cc *c = cc_get(cc);
        if (c == NULL)
            return -1;
        if (c->nregs == 0)
            continue;
        const char *national = digits + ccl;
        Py_ssize_t nl = n - ccl;
        char stripped[PH_BUF];
        Py_ssize_t sl = region_strip(memo, c->regs[0], national, nl, stripped);
        if (sl < 0)
            return -1;
        if ((sl != nl || memcmp(stripped, national, (size_t)nl) != 0) &&
            region_length_ok(c->regs[0], sl)) {
            national = stripped;
            nl = sl;
        }
        if (nl < MIN_NSN || nl > MAX_NSN)
            return 0;
        int ok = valid_for_cc(memo, cc, national, nl);
        if (ok <= 0)
            return ok;
        return format_e164(cc, national, nl, e164);
    }
    return 0;
}

/* is_valid_number(digits, region, require_prefix=True, memo=memo) (national
 * path): the E.164 form into e164; its length, 0 or -1. */
static Py_ssize_t
valid_national(gh_memo *memo, const gh_region *reg, const char *digits, Py_ssize_t n, char *e164)
{
    if (n < MIN_NSN)
        return 0;
    if (reg->idd_match != NULL) {
        Py_ssize_t end;
        if (reg->idd_lit_len >= 0)
            end = n >= reg->idd_lit_len && memcmp(digits, reg->idd_lit, (size_t)reg->idd_lit_len) == 0
                      ? reg->idd_lit_len
                      : -1;
        else if ((end = rx_match_end(memo, reg->idd_match, digits, n)) == -2)
            return -1;
        if (end >= 0 && end < n && digits[end] != '0')
            return intl(memo, digits + end, n - end, e164);
    }
    if (!lenset_has(reg->max_input, n))
        return 0; /* no national prefix or country code makes this length valid */
    int cc = reg->cc;
    const char *number = digits;
    Py_ssize_t nl = n;
    char buf[PH_BUF];
    if (n >= reg->ccl && memcmp(digits, reg->ccs, (size_t)reg->ccl) == 0) {
        Py_ssize_t pl = region_strip(memo, reg, digits + reg->ccl, n - reg->ccl, buf);
        if (pl < 0)
            return -1;
        int take = reg->npossible > 0 && reg->possible[reg->npossible - 1] != -1 &&
                   n > reg->possible[reg->npossible - 1]; /* too_long */
        if (!take) {
            int a = general_pattern(memo, reg, digits, n);
            if (a < 0)
                return -1;
            if (!a) {
                int b = general_pattern(memo, reg, buf, pl);
                if (b < 0)
                    return -1;
                take = b;
            }
        }
        if (take) {
            if (pl < MIN_NSN || pl > MAX_NSN)
                return 0;
            int ok = valid_for_cc(memo, cc, buf, pl);
            if (ok <= 0)
                return ok;
            return format_e164(cc, buf, pl, e164);
        }
    }
    Py_ssize_t sl = region_strip(memo, reg, number, nl, buf);
    if (sl < 0)
        return -1;
    int had_prefix =
        (sl != nl || memcmp(buf, number, (size_t)nl) != 0) && region_length_ok(reg, sl);
    if (had_prefix) {
        number = buf;
        nl = sl;
    }
    if (nl < MIN_NSN || nl > MAX_NSN)
        return 0;
    int ok = valid_for_cc(memo, cc, number, nl);
    if (ok <= 0)
        return ok;
    if (!had_prefix) {
        gh_cc *c = cc_get(cc);
        if (c == NULL)
            return -1;
        int req = region_prefix_required(memo, c->regs[0], number, nl);
        if (req < 0)
            return -1;
        if (req)
            return 0; /* e.g. German numbers written without their leading 0 */
    }
    return format_e164(cc, number, nl, e164);
}

/* ================================================================== detector context */

typedef struct {
    int nregions;
    gh_region **regions; /* detector.regions, in order */
    int *owner;          /* _regions_filter: filter pattern of each region, -1: none */
    int filter_kind;     /* 0: none, 1: RE2 set Match, 2: tuple of fullmatch */
    PyObject *filter;
    Py_ssize_t npats;   /* at most PH_MAX_PATS */
    lenset national;   /* _national_lengths */
    Py_ssize_t min_national;
} gh_phone_ctx;

/* phone.py is imported on first use (not at module init: the masking package
 * may be importing the accelerator). */
static int
import_phone(void)
{
    if (py_accel_detector != NULL)
        return 0;
    PyObject *errors = PyImport_ImportModule("proxy_worker.masking.errors");
    if (errors == NULL)
        return -1;
    PyObject *err = PyObject_GetAttrString(errors, "MaskingError");
    Py_DECREF(errors);
    if (err == NULL)
        return -1;
    PyObject *phone = PyImport_ImportModule("proxy_worker.masking.phone");
    if (phone == NULL) {
        Py_DECREF(err);
        return -1;
    }
    PyObject *r = PyObject_GetAttrString(phone, "_accel_region");
    PyObject *c = PyObject_GetAttrString(phone, "_accel_cc");
    PyObject *d = PyObject_GetAttrString(phone, "_accel_detector");
    PyObject *g = PyObject_GetAttrString(phone, "_region");
    Py_DECREF(phone);
    if (r == NULL || c == NULL || d == NULL || g == NULL) {
        Py_XDECREF(r);
        Py_XDECREF(c);
        Py_XDECREF(d);
        Py_XDECREF(g);
        Py_DECREF(err);
        return -1;
    }
    MaskingError = err;
    py_accel_region = r;
    py_accel_cc = c;
    py_region = g;
    py_accel_detector = d;
    return 0;
}

void
gh_phone_free(void *p)
{
    gh_phone_ctx *ctx = p;
    if (ctx == NULL)
        return;
    PyMem_Free(ctx->regions);
    PyMem_Free(ctx->owner);
    Py_XDECREF(ctx->filter);
    PyMem_Free(ctx);
}

void *
gh_phone_compile(PyObject *detector)
{
    if (import_phone() < 0)
        return NULL;
    PyObject *t = PyObject_CallOneArg(py_accel_detector, detector);
    if (t == NULL)
        return NULL;
    gh_phone_ctx *ctx = PyMem_Calloc(1, sizeof(gh_phone_ctx));
    if (ctx == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if (check_tuple(t, 4) < 0)
        goto fail;
    if ((ctx->regions = regions_of(PyTuple_GET_ITEM(t, 0), &ctx->nregions)) == NULL)
        goto fail;
    if (lenset_from(PyTuple_GET_ITEM(t, 1), &ctx->national) < 0)
        goto fail;
    ctx->min_national = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 2));
    PyObject *f = PyTuple_GET_ITEM(t, 3);
    if (check_tuple(f, 3) < 0)
        goto fail;
    ctx->filter_kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(f, 0));
    PyObject *owners = PyTuple_GET_ITEM(f, 1);
    ctx->owner = PyMem_Calloc((size_t)ctx->nregions + 1, sizeof(int));
    if (ctx->owner == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i < ctx->nregions && i < PyTuple_GET_SIZE(owners); i++) {
        ctx->owner[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(owners, i));
        if (ctx->owner[i] + 1 > ctx->npats)
            ctx->npats = ctx->owner[i] + 1;
    }
    ctx->filter = Py_NewRef(PyTuple_GET_ITEM(f, 2));
    if (ctx->npats > PH_MAX_PATS) {
        PyErr_SetString(PyExc_ValueError, "phone accelerator: too many region filters");
        goto fail;
    }
    /* the main region of each region's calling code (is_valid_number) */
    for (int i = 0; i < ctx->nregions; i++)
        if (cc_get(ctx->regions[i]->cc) == NULL)
            goto fail;
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(t);
    return ctx;
fail:
    Py_DECREF(t);
    gh_phone_free(ctx);
    return NULL;
}

/* _regions_filter(regions)(digits): ok[k] = the k-th filter accepts the digits
 * (`ok` is the caller's: a context is shared by every use of its detector).
 * 0 / -1. */
static int
worth_trying(gh_phone_ctx *ctx, unsigned char *ok, const char *digits, Py_ssize_t n)
{
    memset(ok, 0, (size_t)ctx->npats + 1);
    if (ctx->filter_kind == 0)
        return 0;
    if (ctx->filter_kind == 2) {
        for (Py_ssize_t k = 0; k < ctx->npats && k < PyTuple_GET_SIZE(ctx->filter); k++) {
            PyObject *m = call_str(PyTuple_GET_ITEM(ctx->filter, k), digits, n);
            if (m == NULL)
                return -1;
            ok[k] = m != Py_None;
            Py_DECREF(m);
        }
        return 0;
    }
    PyObject *b = PyBytes_FromStringAndSize(digits, n);
    if (b == NULL)
        return -1;
    PyObject *res = PyObject_Vectorcall(ctx->filter, &b, 1, NULL);
    Py_DECREF(b);
    if (res == NULL)
        return -1;
    PyObject *fast = PySequence_Fast(res, "RE2 set match");
    Py_DECREF(res);
    if (fast == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        Py_ssize_t k = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
        if (k == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        if (k >= 0 && k < ctx->npats)
            ok[k] = 1;
    }
    Py_DECREF(fast);
    return 0;
}

/* ================================================================== detector: text side */

/* _intl_00_at */
static int
intl_00_at(const char *t, Py_ssize_t n, Py_ssize_t s)
{
    return s + 2 < n && t[s] == '0' && t[s + 1] == '0' &&
           (s == 0 || !(GH_ALNUM(t[s - 1]) || t[s - 1] == '+')) && GH_DIGIT(t[s + 2]) &&
           t[s + 2] != '0';
}

/* _glued_left */
static int
glued_left(const char *t, Py_ssize_t a)
{
    if (a == 0)
        return 0;
    char c = t[a - 1];
    if (GH_ALNUM(c) || c == '_')
        return 1;
    return c == '-' && a >= 2 && (GH_ALNUM(t[a - 2]) || t[a - 2] == '_');
}

/* _DATE_LIKE_RE.search(s[:n]):
 * \d{4}[-/.]\d{1,2}[-/.]\d{1,2} | \d{1,2}[-/.]\d{1,2}[-/.]\d{4} */
static int
date_like(const char *s, Py_ssize_t n)
{
#define D(i) ((i) < n && GH_DIGIT(s[i]))
#define SEP(i) ((i) < n && dot_dash_slash(s[i]))
    for (Py_ssize_t p = 0; p + 5 < n; p++) {
        if (!GH_DIGIT(s[p]))
            continue;
        if (D(p + 1) && D(p + 2) && D(p + 3) && SEP(p + 4) && D(p + 5) &&
            ((D(p + 6) && SEP(p + 7) && D(p + 8)) || (SEP(p + 6) && D(p + 7))))
            return 1;
        for (int k1 = 1; k1 <= 2; k1++) {
            if (k1 == 2 && !D(p + 1))
                break;
            Py_ssize_t q = p + k1;
            if (!SEP(q) || !D(q + 1))
                continue;
            for (int k2 = 1; k2 <= 2; k2++) {
                if (k2 == 2 && !D(q + 2))
                    break;
                Py_ssize_t r = q + 1 + k2;
                if (SEP(r) && D(r + 1) && D(r + 2) && D(r + 3) && D(r + 4))
                    return 1;
            }
        }
    }
    return 0;
#undef D
#undef SEP
}

/* _EXT_RE.match(text, p): [ \t]*(?:x|ext\.?|extension|\#)[ \t]*\d{1,7}(?!\d),
 * IGNORECASE. The match's end or -1. (Giving back blanks never helps: the
 * alternatives and \d do not start with one.) */
static Py_ssize_t
ext_tail(const char *t, Py_ssize_t n, Py_ssize_t p)
{
    while (p < n && (t[p] == ' ' || t[p] == '\t'))
        p++;
    Py_ssize_t d = p;
    while (d < n && GH_DIGIT(t[d]))
        d++;
    return d > p && d - p <= 7 ? d : -1;
}

static int
lower_is(const char *t, Py_ssize_t n, Py_ssize_t p, const char *w)
{
    for (; *w; w++, p++)
        if (p >= n || (t[p] | 0x20) != *w)
            return 0;
    return 1;
}

static Py_ssize_t
ext_match(const char *t, Py_ssize_t n, Py_ssize_t p)
{
    while (p < n && (t[p] == ' ' || t[p] == '\t'))
        p++;
    if (p >= n)
        return -1;
    Py_ssize_t e;
    if ((t[p] | 0x20) == 'x' && (e = ext_tail(t, n, p + 1)) >= 0)
        return e;
    if (lower_is(t, n, p, "ext")) {
        if (p + 3 < n && t[p + 3] == '.' && (e = ext_tail(t, n, p + 4)) >= 0)
            return e;
        if ((e = ext_tail(t, n, p + 3)) >= 0)
            return e;
        if (lower_is(t, n, p, "extension") && (e = ext_tail(t, n, p + 9)) >= 0)
            return e;
    }
    if (t[p] == '#' && (e = ext_tail(t, n, p + 1)) >= 0)
        return e;
    return -1;
}

typedef struct {
    Py_ssize_t start, end;
    Py_ssize_t len;
    char e164[PH_BUF];
} cand;

typedef struct {
    gh_phone_ctx *ctx;
    const char *t;
    Py_ssize_t n;
    Py_ssize_t budget;
    gh_memo memo;
    unsigned char ok[PH_MAX_PATS + 1]; /* worth_trying's answer */
    /* scratch of _candidates */
    Py_ssize_t *ts, *te, *acc;
    Py_ssize_t cap;
    cand *out;
    Py_ssize_t nout, capout;
} finder;

/* PhoneDetector._validate: 1 (c filled), 0, -1. */
static int
validate(finder *F, Py_ssize_t s0, Py_ssize_t e0, cand *c)
{
    const char *t = F->t;
    Py_ssize_t n = F->n;
    int intl00 = intl_00_at(t, n, s0);
    int is_intl = t[s0] == '+' || intl00;
    if (date_like(t + s0, e0 - s0))
        return 0;
    if ((e0 < n && (t[e0] == ':' || t[e0] == '%')) ||
        (s0 >= 2 && t[s0 - 1] == ':' && GH_DIGIT(t[s0 - 2])))
        return 0; /* part of a time stamp or a percentage */
    char digits[PH_BUF];
    Py_ssize_t dl = 0;
    for (Py_ssize_t i = s0; i < e0; i++)
        if (GH_DIGIT(t[i])) {
            if (dl == PH_BUF - 1) {
                PyErr_SetString(PyExc_RuntimeError, "phone accelerator: candidate too long");
                return -1;
            }
            digits[dl++] = t[i];
        }
    const char *d = digits;
    if (intl00) {
        d += 2;
        dl -= 2;
    }
    if (--F->budget < 0) {
        PyErr_SetString(MaskingError,
                        "text too dense with digit groups to check for phone numbers");
        return -1;
    }
    F->memo.n = 0;
    Py_ssize_t el;
    if (is_intl) {
        el = intl(&F->memo, d, dl, c->e164);
    }
    else {
        gh_phone_ctx *ctx = F->ctx;
        if (worth_trying(ctx, F->ok, d, dl) < 0)
            return -1;
        el = 0;
        for (int i = 0; i < ctx->nregions && el == 0; i++) {
            if (ctx->owner[i] >= 0 && !F->ok[ctx->owner[i]])
                continue;
            el = valid_national(&F->memo, ctx->regions[i], d, dl, c->e164);
        }
    }
    if (el <= 0)
        return el < 0 ? -1 : 0;
    c->start = s0;
    c->end = e0;
    c->len = el;
    return 1;
}

static int
push_cand(finder *F, const cand *c)
{
    if (F->nout == F->capout) {
        Py_ssize_t cap = F->capout ? F->capout * 2 : 8;
        cand *v = PyMem_Realloc(F->out, (size_t)cap * sizeof(cand));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        F->out = v;
        F->capout = cap;
    }
    F->out[F->nout++] = *c;
    return 0;
}

/* PhoneDetector._candidates: F->out = the run's detections. 0 / -1. */
static int
candidates(finder *F, Py_ssize_t a, Py_ssize_t b)
{
    const char *t = F->t;
    Py_ssize_t n = F->n;
    F->nout = 0;
    if (a > 0 && (t[a - 1] == '+' || t[a - 1] == '('))
        a--;
    Py_ssize_t need = (b - a) / 2 + 2;
    if (need > F->cap) {
        PyMem_Free(F->ts);
        PyMem_Free(F->te);
        PyMem_Free(F->acc);
        F->ts = PyMem_Malloc((size_t)need * sizeof(Py_ssize_t));
        F->te = PyMem_Malloc((size_t)need * sizeof(Py_ssize_t));
        F->acc = PyMem_Malloc((size_t)(need + 1) * sizeof(Py_ssize_t));
        F->cap = need;
        if (!F->ts || !F->te || !F->acc) {
            F->cap = 0;
            PyErr_NoMemory();
            return -1;
        }
    }
    /* tokens: \S+ within [a, b) */
    Py_ssize_t nfree = 0;
    F->acc[0] = 0;
    Py_ssize_t p = a;
    while (p < b) {
        if (py_space(t[p])) {
            p++;
            continue;
        }
        Py_ssize_t ts = p, nd = 0;
        while (p < b && !py_space(t[p])) {
            nd += !punct_drop(t[p]);
            p++;
        }
        Py_ssize_t te = p;
        if (!nd)
            continue; /* "." or "-" between numbers */
        while (dot_dash_slash(t[ts])) /* sentence punctuation around a number */
            ts++;
        while (dot_dash_slash(t[te - 1]))
            te--;
        if (glued_left(t, ts))
            continue; /* part of an identifier such as "ORD-2024-000123" */
        if (te < n && GH_ALPHA(t[te]) && (t[te] | 0x20) != 'x' && (t[te] | 0x20) != 'e')
            continue; /* (x / ext extensions may follow directly) */
        F->ts[nfree] = ts;
        F->te[nfree] = te;
        F->acc[nfree + 1] = F->acc[nfree] + nd;
        nfree++;
    }
    /* windows of up to MAX_TOKENS tokens, longest first */
    Py_ssize_t i = 0;
    while (i < nfree) {
        int hit = 0;
        Py_ssize_t s0 = F->ts[i];
        int is_intl = t[s0] == '+' || intl_00_at(t, n, s0);
        Py_ssize_t last = i;
        while (last + 1 < nfree && last + 1 - i < MAX_TOKENS) {
            Py_ssize_t g0 = F->te[last], g1 = F->ts[last + 1];
            if (g1 - g0 > 2)
                break;
            int blank = 1;
            for (Py_ssize_t k = g0; k < g1; k++)
                blank &= py_space(t[k]);
            if (!blank)
                break;
            last++;
        }
        for (Py_ssize_t j = last; j >= i; j--) {
            Py_ssize_t nd = F->acc[j + 1] - F->acc[i];
            if (nd > MAX_DIGITS + 3 || (is_intl ? nd < 7 : !lenset_has(F->ctx->national, nd)))
                continue;
            cand c;
            int r = validate(F, s0, F->te[j], &c);
            if (r < 0)
                return -1;
            if (r) {
                Py_ssize_t e = ext_match(t, n, c.end);
                if (e >= 0)
                    c.end = e;
                if (push_cand(F, &c) < 0)
                    return -1;
                i = j + 1;
                hit = 1;
                break;
            }
        }
        if (!hit)
            i++;
    }
    return 0;
}

/* PhoneDetector.find */
int
gh_find_phone(void *ctx, const char *t, Py_ssize_t n, gh_dets *out)
{
    finder F;
    F.ctx = ctx;
    F.t = t;
    F.n = n;
    F.budget = BUDGET_MIN + n / BUDGET_CHARS;
    F.ts = F.te = F.acc = NULL;
    F.cap = 0;
    F.out = NULL;
    F.nout = F.capout = 0;
    int rc = 0;
    Py_ssize_t last_end = 0;
    Py_ssize_t pos = 0;
    while (pos < n) {
        /* _PHONE_RUN_RE: \d[\d().\-/ \t]*\d */
        if (!GH_DIGIT(t[pos])) {
            pos++;
            continue;
        }
        Py_ssize_t a = pos, q = pos + 1, lastd = -1;
        for (; q < n && run_char(t[q]); q++)
            if (GH_DIGIT(t[q]))
                lastd = q;
        if (lastd < 0) {
            pos = a + 1;
            continue;
        }
        Py_ssize_t b = lastd + 1, nd = 0;
        int space = 0;
        pos = b;
        for (Py_ssize_t k = a; k < b; k++) {
            nd += GH_DIGIT(t[k]);
            space |= t[k] == ' ';
        }
        if (nd < MIN_INTL_DIGITS)
            continue;
        int intl_start = (a > 0 && t[a - 1] == '+') || intl_00_at(t, n, a);
        if (nd < F.ctx->min_national && !intl_start && !space)
            continue;
        if (candidates(&F, a, b) < 0) {
            rc = -1;
            break;
        }
        for (Py_ssize_t k = 0; k < F.nout; k++) {
            cand *c = &F.out[k];
            if (c->start >= last_end) {
                last_end = c->end;
                if (gh_dets_push_ascii(out, c->start, c->end, GH_PHONE, c->e164, c->len) < 0) {
                    rc = -1;
                    break;
                }
            }
        }
        if (rc < 0)
            break;
    }
    PyMem_Free(F.ts);
    PyMem_Free(F.te);
    PyMem_Free(F.acc);
    PyMem_Free(F.out);
    return rc;
}

/* ================================================================== test entry point */

PyDoc_STRVAR(phone_is_valid_doc,
"phone_is_valid_number(digits, region, international=False) -> str | None\n\n"
"The C port of ``phone.is_valid_number(digits, region, international=...,\n"
"require_prefix=True)`` (ASCII digits only), for tests.");

static PyObject *
phone_is_valid(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"digits", "region", "international", NULL};
    const char *digits, *region;
    Py_ssize_t dl;
    int international = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#s|p:phone_is_valid_number", kwlist,
                                     &digits, &dl, &region, &international))
        return NULL;
    for (Py_ssize_t i = 0; i < dl; i++)
        if (!GH_DIGIT(digits[i]) || dl >= PH_BUF) {
            PyErr_SetString(PyExc_ValueError, "digits: up to 63 ASCII digits");
            return NULL;
        }
    if (import_phone() < 0)
        return NULL;
    gh_memo *memo = PyMem_Malloc(sizeof(gh_memo));
    if (memo == NULL)
        return PyErr_NoMemory();
    memo->n = 0;
    char e164[PH_BUF];
    Py_ssize_t el = 0;
    if (international)
        el = intl(memo, digits, dl, e164);
    else {
        PyObject *obj = PyObject_CallFunction(py_region, "s", region);
        if (obj == NULL)
            el = -1;
        else if (obj != Py_None) {
            gh_region *r = region_get(obj);
            el = r == NULL ? -1 : valid_national(memo, r, digits, dl, e164);
        }
        Py_XDECREF(obj);
    }
    PyMem_Free(memo);
    if (el < 0)
        return NULL;
    if (el == 0)
        Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize(e164, el);
}

static PyMethodDef phone_methods[] = {
    {"phone_is_valid_number", (PyCFunction)(void (*)(void))phone_is_valid,
     METH_VARARGS | METH_KEYWORDS, phone_is_valid_doc},
    {NULL, NULL, 0, NULL},
};

int
gh_phone_init(PyObject *module)
{
    str_end = PyUnicode_InternFromString("end");
    str_group = PyUnicode_InternFromString("group");
    str_lastindex = PyUnicode_InternFromString("lastindex");
    kw_count = Py_BuildValue("(s)", "count");
    if (!str_end || !str_group || !str_lastindex || !kw_count)
        return -1;
    return PyModule_AddFunctions(module, phone_methods);
}
