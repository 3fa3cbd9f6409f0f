/* The structural detectors of detectors.py in C (see accel.h).
 *
 * Each section mirrors one Python detector and matches its regexes by hand.
 * The regexes are written so that (almost) every quantifier has a single
 * possible outcome (possessive, or greedy over a class that cannot contain
 * the next token); where backtracking can change the result, the comment
 * says how it is reproduced. Character classes are Python's re classes on
 * ASCII text: a NUL byte is a non-word character like any other.
 *
 * The data tables (card issuer ranges, IBAN registry, the SSN keyword
 * window) are read from proxy_worker.masking.detectors once, at module init,
 * so that the C finders cannot drift from the Python ones.
 */
#include "accel.h"

#include <string.h>

/* \s of Python's re on ASCII: \t \n \v \f \r, \x1c-\x1f and space. */
#define GH_SPACE(c) ((unsigned char)(c) - 9u < 5u || (unsigned char)(c) - 28u < 5u)

static inline char
lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/* =========================================================== e-mail */
/* EmailDetector.find: _EMAIL_RE.finditer
 *     (?<![\w.%+\-]) [\w.%+\-]{1,64}+ @ (?:[^\W_][\w\-]{0,62}\.){1,8}
 *     (?:xn--[\w\-]{1,59}|[^\W\d_]{2,63}) (?![^\W_])
 * then leading dots are trimmed from the span (a local part of dots only is
 * dropped) and the span is lower-cased. */

#define EMAIL_MAX_SPAN (64 + 1 + 8 * 64 + 63)

static inline int
email_local(char c) /* [\w.%+\-] */
{
    return GH_WORD(c) || c == '.' || c == '%' || c == '+' || c == '-';
}

/* End of one label `[^\W_][\w\-]{0,62}\.` at p, or -1. The greedy
 * [\w\-]{0,62} cannot give back characters usefully (none of them is the
 * "." that must follow), so a label either matches its whole run or not. */
static Py_ssize_t
email_label(const char *t, Py_ssize_t n, Py_ssize_t p)
{
    if (p >= n || !GH_ALNUM(t[p]))
        return -1;
    Py_ssize_t q = p + 1, lim = p + 63 < n ? p + 63 : n;
    while (q < lim && (GH_WORD(t[q]) || t[q] == '-'))
        q++;
    return q < n && t[q] == '.' ? q + 1 : -1;
}

/* End of the TLD `(?:xn--[\w\-]{1,59}|[^\W\d_]{2,63})(?![^\W_])` at q, or -1.
 * Punycode first: the greedy [\w\-]{1,59} gives characters back until the
 * next one is not a letter or digit. Then letters: the run must be 2-63 long
 * and not followed by a digit (a shorter prefix is followed by a letter). */
static Py_ssize_t
email_tld(const char *t, Py_ssize_t n, Py_ssize_t q)
{
    if (q + 4 < n && memcmp(t + q, "xn--", 4) == 0) {
        Py_ssize_t s = q + 4, r = s;
        while (r < n && r - s < 59 && (GH_WORD(t[r]) || t[r] == '-'))
            r++;
        for (Py_ssize_t e = r; e > s; e--)
            if (e == n || !GH_ALNUM(t[e]))
                return e;
    }
    Py_ssize_t e = q, lim = q + 64 < n ? q + 64 : n;
    while (e < lim && GH_ALPHA(t[e]))
        e++;
    if (e - q < 2 || e - q > 63 || (e < n && GH_DIGIT(t[e])))
        return -1;
    return e;
}

/* End of the domain part starting at p, or -1. The labels are greedy
 * ({1,8}): take as many as match, then give them back one by one until the
 * TLD matches after them. */
static Py_ssize_t
email_domain(const char *t, Py_ssize_t n, Py_ssize_t p)
{
    Py_ssize_t ends[9];
    int m = 0;
    ends[0] = p;
    while (m < 8 && (ends[m + 1] = email_label(t, n, ends[m])) >= 0)
        m++;
    for (; m >= 1; m--) {
        Py_ssize_t e = email_tld(t, n, ends[m]);
        if (e >= 0)
            return e;
    }
    return -1;
}

int
gh_find_email(const char *t, Py_ssize_t n, gh_dets *out)
{
    char norm[EMAIL_MAX_SPAN];
    Py_ssize_t pos = 0; /* where finditer's next search starts */
    const char *at;
    while (pos < n && (at = memchr(t + pos, '@', (size_t)(n - pos))) != NULL) {
        /* A match using this "@" starts where its run of local-part characters
         * does (the look-behind), at or after pos; the possessive {1,64}+ needs
         * the whole run, 1-64 characters, before the "@". */
        Py_ssize_t a = at - t, s = a;
        while (s > 0 && a - s <= 64 && email_local(t[s - 1]))
            s--;
        Py_ssize_t end = -1;
        if (s >= pos && a - s >= 1 && a - s <= 64)
            end = email_domain(t, n, a + 1);
        if (end < 0) {
            pos = a + 1;
            continue;
        }
        pos = end;
        while (t[s] == '.')
            s++;
        if (t[s] == '@') /* local part was only dots */
            continue;
        for (Py_ssize_t k = s; k < end; k++)
            norm[k - s] = lower(t[k]);
        if (gh_dets_push_ascii(out, s, end, GH_EMAIL, norm, end - s) < 0)
            return -1;
    }
    return 0;
}

/* =========================================================== payment cards */
/* CreditCardDetector.find: runs of _CARD_RUN_RE
 *     (?<![0-9]) [0-9]++ (?:[ \-][0-9]++)*+
 * (all possessive: a maximal run of digit groups joined by single spaces or
 * dashes), glued end groups dropped, then per starting group the longest
 * window of groups that passes card_issuer() and luhn_valid(). */

/* detectors._CARD_RANGES: (low prefix, high prefix, prefix length, lengths). */
typedef struct {
    long long lo, hi;
    int plen;
    unsigned lengths; /* bit k: length k allowed */
} card_range;

static card_range card_ranges[64];
static int n_card_ranges;

/* card_issuer(digits) */
static int
card_issuer(const char *d, int n)
{
    if (n < 12 || n > 19 || d[0] == '0')
        return 0;
    for (int r = 0; r < n_card_ranges; r++) {
        const card_range *cr = &card_ranges[r];
        if (!(cr->lengths & (1u << n)))
            continue;
        long long prefix = 0;
        for (int k = 0; k < cr->plen && k < n; k++)
            prefix = prefix * 10 + (d[k] - '0');
        if (cr->lo <= prefix && prefix <= cr->hi)
            return 1;
    }
    return 0;
}

/* luhn_valid(digits), n >= 1 */
static int
luhn_valid(const char *d, int n)
{
    static const int dbl[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
    int total = 0;
    for (int k = n - 1, odd = 1; k >= 0; k--, odd = !odd)
        total += odd ? d[k] - '0' : dbl[d[k] - '0'];
    return total % 10 == 0;
}

/* The window loop of CreditCardDetector.find over the kept groups, which
 * lie in [gs, ge): maximal digit runs joined by single separators, so group
 * i starts at `a`, ends at the next non-digit, and the separator before a
 * group (seps[k]) is the character just before it. */
static int
card_windows(const char *t, Py_ssize_t gs, Py_ssize_t ge, gh_dets *out)
{
    Py_ssize_t a = gs;
    while (a < ge) {
        char digits[19];
        int total = 0, short_group = 0, best = -1;
        Py_ssize_t a_end = a, best_end = -1;
        while (a_end < ge && GH_DIGIT(t[a_end]))
            a_end++;
        for (Py_ssize_t ja = a;;) { /* group j = [ja, jb) */
            Py_ssize_t jb = ja;
            while (jb < ge && GH_DIGIT(t[jb]))
                jb++;
            int glen = (int)(jb - ja);
            total += glen;
            short_group |= glen < 3;
            /* One number uses one separator (seps[j] == seps[i + 1], and
             * seps[i] when group i is not the first). */
            int mixed = ja > a && (t[ja - 1] != t[a_end] || (a > gs && t[a - 1] != t[ja - 1]));
            if (total > 19 || (ja > a && short_group) || mixed)
                break;
            memcpy(digits + total - glen, t + ja, (size_t)glen);
            if (total >= 12 && card_issuer(digits, total) && luhn_valid(digits, total)) {
                best = total;
                best_end = jb;
            }
            if (jb >= ge)
                break;
            ja = jb + 1;
        }
        if (best >= 0) {
            if (gh_dets_push_ascii(out, a, best_end, GH_CARD, digits, best) < 0)
                return -1;
            a = best_end + 1;
        }
        else {
            a = a_end + 1;
        }
    }
    return 0;
}

int
gh_find_card(const char *t, Py_ssize_t n, gh_dets *out)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (!GH_DIGIT(t[i])) {
            i++;
            continue;
        }
        /* i starts a run (the previous character is not a digit). */
        Py_ssize_t rs = i, re = i, last = i;
        while (re < n && GH_DIGIT(t[re]))
            re++;
        while (re + 1 < n && (t[re] == ' ' || t[re] == '-') && GH_DIGIT(t[re + 1])) {
            last = ++re;
            while (re < n && GH_DIGIT(t[re]))
                re++;
        }
        i = re;
        if (re - rs < 12)
            continue;
        Py_ssize_t gs = rs, ge = re;
        if (re < n && GH_ALNUM(t[re])) { /* last group glued to a word */
            if (last == rs)
                continue;
            ge = last - 1;
        }
        if (rs > 0 && GH_ALNUM(t[rs - 1])) { /* first group glued to a word */
            Py_ssize_t first_end = rs;
            while (first_end < re && GH_DIGIT(t[first_end]))
                first_end++;
            if (first_end >= ge)
                continue;
            gs = first_end + 1;
        }
        if (card_windows(t, gs, ge, out) < 0)
            return -1;
    }
    return 0;
}

/* =========================================================== US SSN / ITIN */
/* _UsTinDetector.find (UsSsnDetector, UsItinDetector):
 *   _TIN_SEP_RE   (?<![^\W_])(?<![0-9][\-]) ([0-9]{3})([\- ])([0-9]{2})\2([0-9]{4})
 *                 (?![^\W_])(?![\-][0-9])
 *   _TIN_BARE_RE  (?<![^\W_]) [0-9]{9} (?![^\W_])
 * Both need a run of 3 or 9 digits not preceded by a letter or digit, so one
 * pass over such runs finds the matches of both in start order (the sorted
 * order of the Python detector: no two matches share a start or overlap). */

static Py_ssize_t tin_window = 48; /* detectors.SSN_KEYWORD_WINDOW */

/* End of the case-insensitive literal `lit` (lower case) at p, or -1;
 * `end` is where the searched text ends. */
static Py_ssize_t
kw_lit(const char *t, Py_ssize_t p, Py_ssize_t end, const char *lit)
{
    for (; *lit; lit++, p++)
        if (p >= end || lower(t[p]) != *lit)
            return -1;
    return p;
}

/* (?![a-z]) with IGNORECASE */
static inline int
kw_no_letter(const char *t, Py_ssize_t p, Py_ssize_t end)
{
    return p >= end || !GH_ALPHA(t[p]);
}

/* [\s_\-]* (greedy; giving back characters never helps: the next token
 * starts with a letter) */
static Py_ssize_t
kw_seps(const char *t, Py_ssize_t p, Py_ssize_t end)
{
    while (p < end && (GH_SPACE(t[p]) || t[p] == '_' || t[p] == '-'))
        p++;
    return p;
}

/* `word` then an optional "s" (greedy `s?`), then (?![a-z]). */
static int
kw_plural(const char *t, Py_ssize_t p, Py_ssize_t end, const char *word)
{
    Py_ssize_t q = kw_lit(t, p, end, word);
    return q >= 0 && (kw_no_letter(t, q, end) ||
                      (lower(t[q]) == 's' && kw_no_letter(t, q + 1, end)));
}

/* `first[\s_\-]*second(?![a-z])` */
static int
kw_pair(const char *t, Py_ssize_t p, Py_ssize_t end, const char *first, const char *second)
{
    Py_ssize_t q = kw_lit(t, p, end, first);
    if (q < 0)
        return 0;
    q = kw_lit(t, kw_seps(t, q, end), end, second);
    return q >= 0 && kw_no_letter(t, q, end);
}

/* A match of _SSN_KEYWORD_RE at p (look-behind included):
 *   (?<![a-z])(?:ssns?|ss\#|social[\s_\-]*sec(?:urity)?|soc\.?\s*sec)(?![a-z]) */
static int
ssn_keyword_at(const char *t, Py_ssize_t p, Py_ssize_t end)
{
    if (p > 0 && GH_ALPHA(t[p - 1]))
        return 0;
    Py_ssize_t q;
    if (kw_plural(t, p, end, "ssn"))
        return 1;
    if ((q = kw_lit(t, p, end, "ss#")) >= 0 && kw_no_letter(t, q, end))
        return 1;
    if ((q = kw_lit(t, p, end, "social")) >= 0 &&
        (q = kw_lit(t, kw_seps(t, q, end), end, "sec")) >= 0) {
        /* (?:urity)? is greedy; without it "sec" must end the word. */
        Py_ssize_t r = kw_lit(t, q, end, "urity");
        if ((r >= 0 && kw_no_letter(t, r, end)) || kw_no_letter(t, q, end))
            return 1;
    }
    if ((q = kw_lit(t, p, end, "soc")) >= 0) {
        if (q < end && t[q] == '.')
            q++;
        while (q < end && GH_SPACE(t[q]))
            q++;
        if ((q = kw_lit(t, q, end, "sec")) >= 0 && kw_no_letter(t, q, end))
            return 1;
    }
    return 0;
}

/* A match of _ITIN_KEYWORD_RE at p (look-behind included):
 *   (?<![a-z])(?:itins?|individual[\s_\-]*taxpayer|taxpayer[\s_\-]*id|tin)(?![a-z]) */
static int
itin_keyword_at(const char *t, Py_ssize_t p, Py_ssize_t end)
{
    if (p > 0 && GH_ALPHA(t[p - 1]))
        return 0;
    Py_ssize_t q;
    return kw_plural(t, p, end, "itin") || kw_pair(t, p, end, "individual", "taxpayer") ||
           kw_pair(t, p, end, "taxpayer", "id") ||
           ((q = kw_lit(t, p, end, "tin")) >= 0 && kw_no_letter(t, q, end));
}

/* keyword.search(t, lo, end): the look-behind sees text before lo, the text
 * ends at end. */
static int
tin_keyword(const char *t, Py_ssize_t lo, Py_ssize_t end, int itin)
{
    for (Py_ssize_t p = lo; p < end; p++) {
        char c = lower(t[p]);
        if (itin ? (c == 'i' || c == 't') && itin_keyword_at(t, p, end)
                 : c == 's' && ssn_keyword_at(t, p, end))
            return 1;
    }
    return 0;
}

/* ssn_valid / itin_valid on 9 digits AAAGGSSSS */
static int
tin_valid(const char *d, int itin)
{
    int area = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    int group = (d[3] - '0') * 10 + (d[4] - '0');
    if (itin)
        return area >= 900 && ((50 <= group && group <= 65) || (70 <= group && group <= 88) ||
                               (90 <= group && group <= 92) || (94 <= group && group <= 99));
    return area != 0 && area != 666 && area < 900 && group != 0 && memcmp(d + 5, "0000", 4) != 0;
}

int
gh_find_tin(const char *t, Py_ssize_t n, const char *hint, Py_ssize_t hn, int itin,
            gh_dets *out)
{
    int et = itin ? GH_ITIN : GH_SSN;
    int hint_ok = -1; /* unknown until a bare number needs it */
    Py_ssize_t i = 0;
    while (i < n) {
        if (!GH_DIGIT(t[i])) {
            i++;
            continue;
        }
        Py_ssize_t s = i;
        while (i < n && GH_DIGIT(t[i]))
            i++;
        if (s > 0 && GH_ALNUM(t[s - 1]))
            continue;
        if (i - s == 3 && s + 11 <= n) { /* _TIN_SEP_RE: AAA-GG-SSSS */
            char sep = t[s + 3];
            const char *d = t + s;
            if ((sep == '-' || sep == ' ') && GH_DIGIT(d[4]) && GH_DIGIT(d[5]) && d[6] == sep &&
                GH_DIGIT(d[7]) && GH_DIGIT(d[8]) && GH_DIGIT(d[9]) && GH_DIGIT(d[10]) &&
                !(s >= 2 && t[s - 1] == '-' && GH_DIGIT(t[s - 2])) &&
                (s + 11 == n || (!GH_ALNUM(d[11]) &&
                                 !(d[11] == '-' && s + 12 < n && GH_DIGIT(d[12]))))) {
                char digits[9] = {d[0], d[1], d[2], d[4], d[5], d[7], d[8], d[9], d[10]};
                if (tin_valid(digits, itin) &&
                    gh_dets_push_ascii(out, s, s + 11, et, digits, 9) < 0)
                    return -1;
            }
        }
        else if (i - s == 9 && (i == n || !GH_ALNUM(t[i]))) { /* _TIN_BARE_RE */
            if (!tin_valid(t + s, itin))
                continue;
            if (!tin_keyword(t, s > tin_window ? s - tin_window : 0, s, itin)) {
                if (hint_ok < 0)
                    hint_ok = tin_keyword(hint, 0, hn, itin);
                if (!hint_ok)
                    continue;
            }
            if (gh_dets_push_ascii(out, s, i, et, t + s, 9) < 0)
                return -1;
        }
    }
    return 0;
}

/* =========================================================== IBAN */
/* IbanDetector.find: _IBAN_RUN_RE.search from pos
 *     (?<![A-Za-z0-9]) [A-Za-z]{2}[0-9]{2}[A-Za-z0-9]{0,32}+ (?: [A-Za-z0-9]{1,32}+){0,12}+
 * (all possessive), split into its alphanumeric groups, cut before the first
 * group glued to further letters/digits, then the longest prefix of groups
 * of the country's length that passes iban_valid(). */

#define IBAN_MAX_LEN 34

/* detectors._IBAN_REGISTRY by country (index (c1 - 'A') * 26 + (c2 - 'A')):
 * the IBAN length (0: not a country) and the BBAN character class of each
 * position from 4 on ('n' [0-9], 'a' [A-Z], 'c' [A-Z0-9]). */
static struct {
    unsigned char len;
    char cls[IBAN_MAX_LEN];
} iban_registry[26 * 26];

/* Why the IBAN finder is off (NULL: it is on). */
static const char *iban_off = "IBAN registry not loaded";

/* iban_valid() for an upper-case compact IBAN whose length is already the
 * country's: BBAN structure, then ISO 7064 mod 97-10. */
static int
iban_valid(const char *c, int len, const char *cls)
{
    for (int k = 4; k < len; k++) {
        if (cls[k] == 'n' ? !GH_DIGIT(c[k]) : cls[k] == 'a' ? GH_DIGIT(c[k]) : 0)
            return 0;
    }
    unsigned r = 0;
    for (int k = 0; k < len; k++) {
        char ch = c[(k + 4) % len];
        r = GH_DIGIT(ch) ? (r * 10 + (unsigned)(ch - '0')) % 97
                         : (r * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return r == 1;
}

int
gh_find_iban(const char *t, Py_ssize_t n, gh_dets *out)
{
    if (iban_off != NULL) {
        PyErr_SetString(PyExc_NotImplementedError, iban_off);
        return -1;
    }
    for (Py_ssize_t i = 0; i + 4 <= n; i++) {
        if (!(GH_ALPHA(t[i]) && GH_ALPHA(t[i + 1]) && GH_DIGIT(t[i + 2]) && GH_DIGIT(t[i + 3])) ||
            (i > 0 && GH_ALNUM(t[i - 1])))
            continue;
        /* The match: its groups end at ends[0..ng). */
        Py_ssize_t ends[13], e = i + 4, lim = i + 36 < n ? i + 36 : n;
        int ng = 0;
        while (e < lim && GH_ALNUM(t[e]))
            e++;
        ends[ng++] = e;
        while (ng < 13 && e + 1 < n && t[e] == ' ' && GH_ALNUM(t[e + 1])) {
            lim = e + 33 < n ? e + 33 : n;
            for (e++; e < lim && GH_ALNUM(t[e]);)
                e++;
            ends[ng++] = e;
        }
        /* Keep the groups before the first glued one; the one prefix of them
         * with the country's length is the only candidate. */
        int idx = (lower(t[i]) - 'a') * 26 + (lower(t[i + 1]) - 'a');
        int want = iban_registry[idx].len, len = 0, k;
        Py_ssize_t a = i;
        for (k = 0; k < ng && len < want; k++) {
            if (ends[k] < n && GH_ALNUM(t[ends[k]]))
                break;
            len += (int)(ends[k] - a);
            a = ends[k] + 1;
        }
        if (want > 0 && len == want) {
            char compact[IBAN_MAX_LEN];
            int m = 0;
            for (Py_ssize_t p = i; m < len; p++)
                if (t[p] != ' ')
                    compact[m++] = (char)(GH_ALPHA(t[p]) ? t[p] & ~0x20 : t[p]);
            if (iban_valid(compact, len, iban_registry[idx].cls)) {
                if (gh_dets_push_ascii(out, i, ends[k - 1], GH_IBAN, compact, len) < 0)
                    return -1;
                i = ends[k - 1] - 1; /* the search goes on at the end */
                continue;
            }
        }
        i = ends[0] - 1; /* the search goes on at the end of the first group */
    }
    return 0;
}

/* Load detectors._IBAN_REGISTRY: {country: (length, re.Pattern | None)}, the
 * patterns being concatenations of [0-9]{k}, [A-Z]{k} and [A-Z0-9]{k}.
 * Sets iban_off when the registry is empty (the Python fallback) or not of
 * that form; -1 only on a Python error. */
static int
load_iban_registry(PyObject *detectors)
{
    PyObject *reg = PyObject_GetAttrString(detectors, "_IBAN_REGISTRY");
    if (reg == NULL)
        return -1;
    if (!PyDict_Check(reg) || PyDict_GET_SIZE(reg) == 0) {
        iban_off = "the IBAN registry is empty (python-stdnum fallback): use the Python detector";
        Py_DECREF(reg);
        return 0;
    }
    const char *bad = "unexpected detectors._IBAN_REGISTRY layout: use the Python detector";
    PyObject *key, *val;
    Py_ssize_t ppos = 0;
    while (PyDict_Next(reg, &ppos, &key, &val)) {
        const char *cc = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (cc == NULL || strlen(cc) != 2 || !(cc[0] >= 'A' && cc[0] <= 'Z') ||
            !(cc[1] >= 'A' && cc[1] <= 'Z') || !PyTuple_Check(val) || PyTuple_GET_SIZE(val) != 2)
            goto bad;
        long len = PyLong_AsLong(PyTuple_GET_ITEM(val, 0));
        if (len == -1 && PyErr_Occurred())
            goto error;
        if (len < 5 || len > IBAN_MAX_LEN)
            goto bad;
        int idx = (cc[0] - 'A') * 26 + (cc[1] - 'A');
        char *cls = iban_registry[idx].cls;
        memset(cls, 'c', IBAN_MAX_LEN);
        PyObject *rx = PyTuple_GET_ITEM(val, 1);
        if (rx != Py_None) {
            PyObject *src = PyObject_GetAttrString(rx, "pattern");
            if (src == NULL)
                goto error;
            const char *s = PyUnicode_Check(src) ? PyUnicode_AsUTF8(src) : NULL;
            long at = 4;
            while (s != NULL && *s) {
                char c;
                if (strncmp(s, "[0-9]{", 6) == 0)
                    c = 'n', s += 6;
                else if (strncmp(s, "[A-Z]{", 6) == 0)
                    c = 'a', s += 6;
                else if (strncmp(s, "[A-Z0-9]{", 9) == 0)
                    c = 'c', s += 9;
                else
                    break;
                long k = 0;
                while (GH_DIGIT(*s) && k <= IBAN_MAX_LEN)
                    k = k * 10 + (*s++ - '0');
                if (*s++ != '}' || k < 1 || k > IBAN_MAX_LEN || at + k > len)
                    break;
                memset(cls + at, c, (size_t)k);
                at += k;
            }
            int ok = s != NULL && *s == '\0' && at == len;
            Py_DECREF(src);
            if (!ok) {
                if (PyErr_Occurred())
                    goto error;
                goto bad;
            }
        }
        iban_registry[idx].len = (unsigned char)len;
    }
    Py_DECREF(reg);
    iban_off = NULL;
    return 0;
bad:
    memset(iban_registry, 0, sizeof iban_registry);
    iban_off = bad;
    Py_DECREF(reg);
    return 0;
error:
    Py_DECREF(reg);
    return -1;
}

/* =========================================================== IPv4 */
/* IpAddressDetector.find on text without an IPv6 candidate:
 * _IPV4_RE.finditer
 *     (?<![\w.]) (?:[0-9]{1,3}\.){3} [0-9]{1,3} (?!\w|\.[0-9])
 * validated like ipaddress.IPv4Address (octets <= 255, no leading zero).
 * Each [0-9]{1,3} must take its whole digit run (a shorter prefix is
 * followed by a digit, not by "." nor by a non-word character). */

int
gh_find_ipv4(const char *t, Py_ssize_t n, gh_dets *out)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (!GH_DIGIT(t[i]) || (i > 0 && (GH_WORD(t[i - 1]) || t[i - 1] == '.'))) {
            i++;
            continue;
        }
        Py_ssize_t p = i;
        int valid = 1, octet;
        for (octet = 0; octet < 4; octet++) {
            Py_ssize_t d = p;
            while (d < n && GH_DIGIT(t[d]) && d - p < 4)
                d++;
            if (d == p || d - p > 3)
                break;
            int v = 0;
            for (Py_ssize_t k = p; k < d; k++)
                v = v * 10 + (t[k] - '0');
            if (v > 255 || (d - p > 1 && t[p] == '0'))
                valid = 0;
            if (octet < 3) {
                if (d >= n || t[d] != '.')
                    break;
                p = d + 1;
            }
            else if (d < n && (GH_WORD(t[d]) || (t[d] == '.' && d + 1 < n && GH_DIGIT(t[d + 1])))) {
                break;
            }
            else {
                p = d;
            }
        }
        if (octet < 4) { /* no match at i */
            i++;
            continue;
        }
        if (valid && gh_dets_push_ascii(out, i, p, GH_IP, t + i, p - i) < 0)
            return -1;
        i = p;
    }
    return 0;
}

/* =========================================================== init */

/* Load detectors._CARD_RANGES: ((low, high, prefix length, lengths), ...). */
static int
load_card_ranges(PyObject *detectors)
{
    PyObject *ranges = PyObject_GetAttrString(detectors, "_CARD_RANGES");
    if (ranges == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(ranges, "detectors._CARD_RANGES is not a sequence");
    Py_DECREF(ranges);
    if (seq == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > (Py_ssize_t)(sizeof card_ranges / sizeof card_ranges[0])) {
        PyErr_SetString(PyExc_RuntimeError, "too many card ranges for the C finder");
        goto error;
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        card_range *cr = &card_ranges[r];
        PyObject *lengths;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, r), "LLiO", &cr->lo, &cr->hi,
                              &cr->plen, &lengths))
            goto error;
        if (cr->plen < 1 || cr->plen > 18) {
            PyErr_SetString(PyExc_RuntimeError, "card range prefix length out of range");
            goto error;
        }
        cr->lengths = 0;
        for (int len = 12; len <= 19; len++) {
            PyObject *l = PyLong_FromLong(len);
            int has = l ? PySequence_Contains(lengths, l) : -1;
            Py_XDECREF(l);
            if (has < 0)
                goto error;
            if (has)
                cr->lengths |= 1u << len;
        }
    }
    n_card_ranges = (int)count;
    Py_DECREF(seq);
    return 0;
error:
    Py_DECREF(seq);
    return -1;
}

int
gh_detectors_init(PyObject *module)
{
    PyObject *detectors = PyImport_ImportModule("proxy_worker.masking.detectors");
    if (detectors == NULL)
        return -1;
    int rc = -1;
    PyObject *window = PyObject_GetAttrString(detectors, "SSN_KEYWORD_WINDOW");
    if (window == NULL)
        goto done;
    tin_window = PyLong_AsSsize_t(window);
    Py_DECREF(window);
    if (tin_window == -1 && PyErr_Occurred())
        goto done;
    if (load_card_ranges(detectors) < 0 || load_iban_registry(detectors) < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(detectors);
    return rc;
}
