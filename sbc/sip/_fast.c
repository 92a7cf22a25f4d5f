/* Optional native fast path for message.py's header accessors.
 *
 * Each function finds the first line of a header in a message's unsplit
 * header text (a str starting with the CRLF that ends the start line) and
 * parses its value when it has the usual shape, exactly as the regex fast
 * paths in message.py/headers.py/uri.py would. Anything else (another
 * shape, a folded line, a wide str, no such header) returns None and the
 * pure Python path decides: this module may decline more often, never
 * answer differently (tests/unit/test_fast.py compares the two on every
 * header with one part at an edge, and on generated ones). patch() does
 * set()'s rewrite of one line in the text and the bytes. Nothing here reads
 * outside the objects it is given (docs/fuzz.md runs it under ASan).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Character classes, one bit each. */
#define ALNUM 0x01  /* A-Za-z0-9 */
#define HOST 0x02   /* A-Za-z0-9 - . */
#define USER 0x04   /* A-Za-z0-9 - _ . ! ~ * ' ( ) & = + $ , ; ? / % */
#define UPARAM 0x08 /* A-Za-z0-9 - _ . ! ~ * ' ( ) & + $ [ ] / : % */
#define TOKEN 0x10  /* A-Za-z0-9 - . ! % * _ + ` ' ~ */
#define VALUE 0x20  /* TOKEN : [ ] */
#define PRINT 0x40  /* ! to ~ */
#define ALPHA 0x80  /* A-Za-z */

static unsigned char cls[256];

static void
classes(void)
{
    int c;
    const char *p;
    for (c = 0; c < 256; c++) {
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        int alnum = alpha || (c >= '0' && c <= '9');
        cls[c] = (alnum ? ALNUM | HOST | USER | UPARAM | TOKEN | VALUE : 0)
                 | (alpha ? ALPHA : 0) | (c >= '!' && c <= '~' ? PRINT : 0);
    }
    for (p = "-."; *p; p++) cls[(unsigned char)*p] |= HOST;
    for (p = "-_.!~*'()&=+$,;?/%"; *p; p++) cls[(unsigned char)*p] |= USER;
    for (p = "-_.!~*'()&+$[]/:%"; *p; p++) cls[(unsigned char)*p] |= UPARAM;
    for (p = "-.!%*_+`'~"; *p; p++) cls[(unsigned char)*p] |= TOKEN | VALUE;
    for (p = ":[]"; *p; p++) cls[(unsigned char)*p] |= VALUE;
}

/* The text being read: 1-byte str data and its length. */
typedef struct {
    PyObject *str;
    const unsigned char *s;
    Py_ssize_t n;
} Text;

static int
text_of(PyObject *obj, Text *t)
{
    if (!PyUnicode_Check(obj) || PyUnicode_READY(obj) < 0
        || PyUnicode_KIND(obj) != PyUnicode_1BYTE_KIND)
        return 0;
    t->str = obj;
    t->s = PyUnicode_1BYTE_DATA(obj);
    t->n = PyUnicode_GET_LENGTH(obj);
    return 1;
}

#define AT(t, i) ((i) < (t)->n ? (t)->s[i] : 0)

static Py_ssize_t
span(const Text *t, Py_ssize_t i, unsigned char mask)
{
    while (i < t->n && (cls[t->s[i]] & mask)) i++;
    return i;
}

/* Where the value of the first header line called one of `names` (a tuple
 * of lower-case ASCII bytes) starts, after the colon and blanks; -1 if none.
 * `from` is where to start looking for the CRLF before the name. */
static Py_ssize_t
find_at(const Text *t, PyObject *names, Py_ssize_t from, Py_ssize_t *line_start, Py_ssize_t *colon)
{
    Py_ssize_t i = from, count = PyTuple_GET_SIZE(names);
    while (i + 1 < t->n) {
        const unsigned char *cr = memchr(t->s + i, '\r', t->n - i - 1);
        if (cr == NULL) return -1;
        i = cr - t->s;
        if (t->s[i + 1] != '\n') { i++; continue; }
        Py_ssize_t line = i + 2, k;
        for (k = 0; k < count; k++) {
            PyObject *name = PyTuple_GET_ITEM(names, k);
            const char *nm = PyBytes_AS_STRING(name);
            Py_ssize_t len = PyBytes_GET_SIZE(name), j;
            if (line + len >= t->n) continue;
            for (j = 0; j < len; j++) {
                unsigned char c = t->s[line + j];
                if (c >= 'A' && c <= 'Z') c += 32;
                if (c != (unsigned char)nm[j]) break;
            }
            if (j < len) continue;
            j = line + len;
            while (j < t->n && (t->s[j] == ' ' || t->s[j] == '\t')) j++;
            if (j < t->n && t->s[j] == ':') {
                *line_start = line;
                *colon = ++j;
                while (j < t->n && (t->s[j] == ' ' || t->s[j] == '\t')) j++;
                return j;
            }
        }
        i = line;
    }
    return -1;
}

static Py_ssize_t
find(const Text *t, PyObject *names, Py_ssize_t from)
{
    Py_ssize_t line, colon;
    return find_at(t, names, from, &line, &colon);
}

/* Blanks, then the end of the text or a CRLF that no continuation line
 * follows: the value ended at `i`. */
static int
line_ends(const Text *t, Py_ssize_t i)
{
    while (i < t->n && (t->s[i] == ' ' || t->s[i] == '\t')) i++;
    if (i == t->n) return 1;
    if (i + 1 < t->n && t->s[i] == '\r' && t->s[i + 1] == '\n') {
        unsigned char c = AT(t, i + 2);
        return c != ' ' && c != '\t';
    }
    return 0;
}

/* Where the line holding `i` ends (its CRLF, or the end of the text); -1
 * when a continuation line follows. */
static Py_ssize_t
line_end(const Text *t, Py_ssize_t i)
{
    for (;;) {
        const unsigned char *cr = i < t->n ? memchr(t->s + i, '\r', t->n - i) : NULL;
        if (cr == NULL) return t->n;
        i = cr - t->s;
        if (AT(t, i + 1) == '\n') {
            unsigned char c = AT(t, i + 2);
            return c == ' ' || c == '\t' ? -1 : i;
        }
        i++;
    }
}

static PyObject *
sub(const Text *t, Py_ssize_t a, Py_ssize_t b)
{
    return PyUnicode_Substring(t->str, a, b);
}

/* ;name[=value] params from `*at` while they are there, as a new list of
 * (name, value|None); NULL with no error set when one is malformed (a ';'
 * or '=' with nothing after it). */
static PyObject *
params(const Text *t, Py_ssize_t *at, unsigned char names, unsigned char values)
{
    Py_ssize_t i = *at;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    while (i < t->n && t->s[i] == ';') {
        Py_ssize_t a = i + 1, b = span(t, a, names), c, d;
        PyObject *name, *value, *item;
        if (b == a) goto fail;
        c = d = b;
        if (AT(t, b) == '=') {
            c = b + 1;
            d = span(t, c, values);
            if (d == c) goto fail;
        }
        name = sub(t, a, b);
        if (name == NULL) goto fail;
        if (d > b) {
            value = sub(t, c, d);
            if (value == NULL) { Py_DECREF(name); goto fail; }
        } else {
            value = Py_NewRef(Py_None);
        }
        item = PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (item == NULL || PyList_Append(out, item) < 0) { Py_XDECREF(item); goto fail; }
        Py_DECREF(item);
        i = d;
    }
    *at = i;
    return out;
fail:  /* malformed (no error set: the caller declines) or out of memory */
    Py_DECREF(out);
    return NULL;
}

/* A host as HOST_FAST has it: alphanumerics at both ends, '-' and '.'
 * between. Returns its end, or -1. */
static Py_ssize_t
host(const Text *t, Py_ssize_t i)
{
    Py_ssize_t e = span(t, i, HOST);
    if (e == i || !(cls[t->s[i]] & ALNUM) || !(cls[t->s[e - 1]] & ALNUM)) return -1;
    return e;
}

/* An optional :port of 1 to 5 digits up to 65535. Returns 1 and sets *value
 * (-1: absent) and *at, or 0. */
static int
port(const Text *t, Py_ssize_t *at, long *value)
{
    Py_ssize_t i = *at, j;
    long v = 0;
    *value = -1;
    if (AT(t, i) != ':') return 1;
    for (j = i + 1; j < t->n && t->s[j] >= '0' && t->s[j] <= '9'; j++) {
        if (j - i > 5) return 0;
        v = v * 10 + (t->s[j] - '0');
    }
    if (j == i + 1 || v > 65535) return 0;
    *value = v;
    *at = j;
    return 1;
}

static PyObject *
port_object(long value)
{
    return value < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(value);
}

/* Bound by bind(): the classes to build and their slot names. */
static PyObject *SIPURI_t, *Address_t, *Via_t;
static PyObject *s_scheme, *s_user, *s_password, *s_host, *s_port, *s_params,
    *s_headers, *s_uri, *s_display, *s_transport;

static PyObject *
new_of(PyObject *type)
{
    static PyObject *empty;
    if (empty == NULL && (empty = PyTuple_New(0)) == NULL) return NULL;
    return PyBaseObject_Type.tp_new((PyTypeObject *)type, empty, NULL);
}

/* Set the attributes names[k] = values[k] of a new `type`; the values are
 * borrowed. NULL if any is NULL (its error already set) or a step fails. */
static PyObject *
build(PyObject *type, int count, PyObject *const *names, PyObject *const *values)
{
    int k;
    PyObject *obj;
    for (k = 0; k < count; k++)
        if (values[k] == NULL) return NULL;
    if ((obj = new_of(type)) == NULL) return NULL;
    for (k = 0; k < count; k++)
        if (PyObject_SetAttr(obj, names[k], values[k]) < 0) { Py_DECREF(obj); return NULL; }
    return obj;
}

static void
release(int count, PyObject **values)
{
    int k;
    for (k = 0; k < count; k++) Py_XDECREF(values[k]);
}

/* <sip:...>, the SIP_FAST shape, from `*at` (just after '<') to '>'. */
static PyObject *
sip_uri(const Text *t, Py_ssize_t *at)
{
    Py_ssize_t i = *at, sa = i, se, ua = -1, ue = -1, ha, he;
    long portv;
    PyObject *uri, *uparams;
    if (i + 4 > t->n || memcmp(t->s + i, "sip", 3) != 0) return NULL;
    i += 3;
    if (t->s[i] == 's') i++;
    if (AT(t, i) != ':') return NULL;
    se = i++;
    {
        Py_ssize_t e = span(t, i, USER);
        if (e > i && AT(t, e) == '@') { ua = i; ue = e; i = e + 1; }
    }
    ha = i;
    if ((he = host(t, i)) < 0) return NULL;
    i = he;
    if (!port(t, &i, &portv)) return NULL;
    uparams = params(t, &i, UPARAM, UPARAM);
    if (uparams == NULL) return NULL;
    if (AT(t, i) != '>') { Py_DECREF(uparams); return NULL; }
    *at = i + 1;
    {
        PyObject *names[] = {s_scheme, s_user, s_password, s_host, s_port, s_params, s_headers};
        PyObject *values[] = {sub(t, sa, se), ua < 0 ? Py_NewRef(Py_None) : sub(t, ua, ue),
                              Py_NewRef(Py_None), sub(t, ha, he), port_object(portv), uparams,
                              Py_NewRef(Py_None)};
        uri = build(SIPURI_t, 7, names, values);
        release(7, values);
    }
    return uri;
}

static int
names_arg(PyObject *names)
{
    Py_ssize_t k;
    if (!PyTuple_Check(names)) return 0;
    for (k = 0; k < PyTuple_GET_SIZE(names); k++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(names, k))) return 0;
    return 1;
}

/* The arguments every reader starts with: (text, names, ...) with `nargs`
 * of them. 1: the first `names` line's value starts at *i; 0: no such line,
 * or a text this module does not read (the caller declines); -1: an error. */
static int
first_line(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
           Text *t, Py_ssize_t *i)
{
    if (nargs != want || !names_arg(args[1])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (!text_of(args[0], t)) return 0;
    *i = find(t, args[1], 0);
    return *i >= 0;
}

static int
bound(void)
{
    if (SIPURI_t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fast.bind() was not called");
        return 0;
    }
    return 1;
}

/* address(text, names, only) -> Address or None. `only`: None also when
 * another line of the same header follows (Contact: the one element). */
static PyObject *
fast_address(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, da = -1, de = -1;
    PyObject *uri, *hparams, *addr;
    int found = first_line(args, nargs, 3, "address(text, names, only)", &t, &i);
    if (found < 0 || !bound()) return NULL;
    if (!found) Py_RETURN_NONE;
    if (AT(&t, i) == '"') {
        Py_ssize_t j = i + 1;
        while (j < t.n && t.s[j] != '"' && t.s[j] != '\\' && t.s[j] != '\r' && t.s[j] != '\n') j++;
        if (AT(&t, j) != '"') Py_RETURN_NONE;
        da = i + 1; de = j;
        i = j + 1;
        if (AT(&t, i) == ' ') i++;
    } else if (cls[AT(&t, i)] & TOKEN) {
        Py_ssize_t j = span(&t, i, TOKEN);
        while (AT(&t, j) == ' ' && (cls[AT(&t, j + 1)] & TOKEN)) j = span(&t, j + 1, TOKEN);
        da = i; de = j;
        i = j;
        if (AT(&t, i) == ' ') i++;
    }
    if (AT(&t, i) != '<') Py_RETURN_NONE;
    i++;
    uri = sip_uri(&t, &i);
    if (uri == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    hparams = params(&t, &i, TOKEN, VALUE);
    if (hparams == NULL) {
        Py_DECREF(uri);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!line_ends(&t, i) || (args[2] != Py_None && PyObject_IsTrue(args[2])
                              && find(&t, args[1], i) >= 0)) {
        Py_DECREF(uri);
        Py_DECREF(hparams);
        Py_RETURN_NONE;
    }
    {
        PyObject *names[] = {s_uri, s_display, s_params};
        PyObject *values[] = {uri, da < 0 ? Py_NewRef(Py_None) : sub(&t, da, de), hparams};
        addr = build(Address_t, 3, names, values);
        release(3, values);
    }
    return addr;
}

/* via(text, names) -> the first Via (its first line holding one value) or None. */
static PyObject *
fast_via(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, ta, te, ha, he;
    long portv;
    char upper[16];
    PyObject *vparams, *via;
    int found = first_line(args, nargs, 2, "via(text, names)", &t, &i);
    if (found < 0 || !bound()) return NULL;
    if (!found) Py_RETURN_NONE;
    if (i + 8 > t.n || memcmp(t.s + i, "SIP/2.0/", 8) != 0) Py_RETURN_NONE;
    ta = i + 8;
    te = span(&t, ta, ALPHA);
    if (te == ta || te - ta >= (Py_ssize_t)sizeof(upper) || AT(&t, te) != ' ') Py_RETURN_NONE;
    for (i = ta; i < te; i++) upper[i - ta] = (char)Py_TOUPPER(t.s[i]);
    ha = te + 1;
    if ((he = host(&t, ha)) < 0) Py_RETURN_NONE;
    i = he;
    if (!port(&t, &i, &portv)) Py_RETURN_NONE;
    vparams = params(&t, &i, TOKEN, VALUE);
    if (vparams == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!line_ends(&t, i)) { Py_DECREF(vparams); Py_RETURN_NONE; }
    {
        PyObject *names[] = {s_transport, s_host, s_port, s_params};
        PyObject *values[] = {PyUnicode_FromStringAndSize(upper, te - ta), sub(&t, ha, he),
                              port_object(portv), vparams};
        via = build(Via_t, 4, names, values);
        release(4, values);
    }
    return via;
}

/* cseq(text, names) -> (seq, method) or None. */
static PyObject *
fast_cseq(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, j, me;
    unsigned long long seq = 0;
    PyObject *method, *out;
    int found = first_line(args, nargs, 2, "cseq(text, names)", &t, &i);
    if (found < 0) return NULL;
    if (!found) Py_RETURN_NONE;
    for (j = i; j < t.n && t.s[j] >= '0' && t.s[j] <= '9'; j++) {
        if (j - i >= 10) Py_RETURN_NONE;
        seq = seq * 10 + (t.s[j] - '0');
    }
    if (j == i || seq > 0xFFFFFFFFULL || AT(&t, j) != ' ') Py_RETURN_NONE;
    me = span(&t, j + 1, TOKEN);
    if (me == j + 1 || !line_ends(&t, me)) Py_RETURN_NONE;
    method = sub(&t, j + 1, me);
    if (method == NULL) return NULL;
    out = Py_BuildValue("(KN)", seq, method);
    return out;
}

/* value(text, names) -> the first line's value, stripped; None when there
 * is no such line; False when it is folded (the caller joins the lines). */
static PyObject *
fast_value(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, e;
    if (nargs != 2 || !names_arg(args[1])) {
        PyErr_SetString(PyExc_TypeError, "value(text, names)");
        return NULL;
    }
    if (!text_of(args[0], &t)) Py_RETURN_FALSE;
    if ((i = find(&t, args[1], 0)) < 0) Py_RETURN_NONE;
    if ((e = line_end(&t, i)) < 0) Py_RETURN_FALSE;
    while (e > i && (t.s[e - 1] == ' ' || t.s[e - 1] == '\t')) e--;
    return sub(&t, i, e);
}

/* values(text, names) -> [str] of every such line (get_all's answer), or
 * False when the text is not 1-byte or one of them is folded. */
static PyObject *
fast_values(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, e, from = 0;
    PyObject *out, *item;
    if (nargs != 2 || !names_arg(args[1])) {
        PyErr_SetString(PyExc_TypeError, "values(text, names)");
        return NULL;
    }
    if (!text_of(args[0], &t)) Py_RETURN_FALSE;
    if ((out = PyList_New(0)) == NULL) return NULL;
    while ((i = find(&t, args[1], from)) >= 0) {
        if ((e = line_end(&t, i)) < 0) {
            Py_DECREF(out);
            Py_RETURN_FALSE;
        }
        from = e;
        while (e > i && (t.s[e - 1] == ' ' || t.s[e - 1] == '\t')) e--;
        if ((item = sub(&t, i, e)) == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

/* token(text, names, only) -> the first line's value when it is one run of
 * printable characters (Call-ID; Content-Length's digits with only set and
 * no other line of it), else None. */
static PyObject *
fast_token(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, e;
    int found = first_line(args, nargs, 3, "token(text, names, only)", &t, &i);
    if (found < 0) return NULL;
    if (!found) Py_RETURN_NONE;
    e = span(&t, i, PRINT);
    if (e == i || !line_ends(&t, e)) Py_RETURN_NONE;
    if (args[2] != Py_None && PyObject_IsTrue(args[2]) && find(&t, args[1], e) >= 0)
        Py_RETURN_NONE;
    return sub(&t, i, e);
}

/* patch(text, raw, at, names, value) -> (text, raw) with the one line of a
 * header rewritten as "Name: value" (its name spelled as it was), `raw`
 * holding `text` from byte `at`; None when that line is absent, folded or
 * not the only one (nothing to patch); False when text or value is not
 * ASCII (byte and character offsets differ: Python does it). */
static PyObject *
fast_patch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t start, colon, e, name_end, at, vlen, len, head, tail, rlen;
    PyObject *raw, *value, *text, *bytes, *out;
    char *r;
    Py_UCS1 *w;
    if (nargs != 5 || !PyBytes_Check(args[1]) || !PyLong_Check(args[2])
        || !names_arg(args[3]) || !PyUnicode_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "patch(text, raw, at, names, value)");
        return NULL;
    }
    raw = args[1];
    value = args[4];
    if ((at = PyLong_AsSsize_t(args[2])) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "at < 0");
        return NULL;
    }
    if (!text_of(args[0], &t) || !PyUnicode_IS_ASCII(args[0]) || PyUnicode_READY(value) < 0
        || !PyUnicode_IS_ASCII(value))
        Py_RETURN_FALSE;
    if (find_at(&t, args[3], 0, &start, &colon) < 0 || (e = line_end(&t, colon)) < 0
        || find(&t, args[3], e) >= 0)
        Py_RETURN_NONE;
    rlen = PyBytes_GET_SIZE(raw);
    if (at + t.n > rlen) Py_RETURN_FALSE;  /* not the text it holds: Python decides */
    name_end = colon - 1;
    while (name_end > start && (t.s[name_end - 1] == ' ' || t.s[name_end - 1] == '\t')) name_end--;
    vlen = PyUnicode_GET_LENGTH(value);
    len = (name_end - start) + 2 + vlen;  /* Name: value */
    head = start;
    tail = t.n - e;
    text = PyUnicode_New(head + len + tail, 127);
    bytes = PyBytes_FromStringAndSize(NULL, rlen - (e - start) + len);
    if (text == NULL || bytes == NULL) {
        Py_XDECREF(text);
        Py_XDECREF(bytes);
        return NULL;
    }
    w = PyUnicode_1BYTE_DATA(text);
    memcpy(w, t.s, head);
    memcpy(w + head, t.s + start, name_end - start);
    memcpy(w + head + (name_end - start), ": ", 2);
    memcpy(w + head + (name_end - start) + 2, PyUnicode_1BYTE_DATA(value), vlen);
    memcpy(w + head + len, t.s + e, tail);
    r = PyBytes_AS_STRING(bytes);
    memcpy(r, PyBytes_AS_STRING(raw), at);
    memcpy(r + at, w, head + len + tail);
    memcpy(r + at + head + len + tail, PyBytes_AS_STRING(raw) + at + t.n, rlen - at - t.n);
    out = PyTuple_Pack(2, text, bytes);
    Py_DECREF(text);
    Py_DECREF(bytes);
    return out;
}

/* split(text, keys) -> [(key, name, value)] for every header line of the
 * unsplit text, as _split_headers makes them: `name` exactly as written and
 * found in `keys` (spelling -> key), the value stripped of blanks. None
 * (the Python path decides) for a text that is not 1-byte, a folded line,
 * or a line whose name is not in `keys` (another spelling, or malformed).
 * With only_keys true, [key] alone (Message.keys()). */
static PyObject *
fast_split(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Text t;
    Py_ssize_t i, end, colon, a, b;
    PyObject *out, *name = NULL, *key, *value = NULL, *item;
    int only = 0;
    if (nargs < 2 || nargs > 3 || !PyDict_Check(args[1])
        || (nargs == 3 && (only = PyObject_IsTrue(args[2])) < 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "split(text, keys: dict, only_keys=False)");
        return NULL;
    }
    if (!text_of(args[0], &t) || t.n < 2 || t.s[0] != '\r' || t.s[1] != '\n') Py_RETURN_NONE;
    if ((out = PyList_New(0)) == NULL) return NULL;
    for (i = 2; i <= t.n; i = end + 2) {
        const unsigned char *colon_at;
        /* -1: a continuation line follows; a line starting blank continues nothing */
        if ((end = line_end(&t, i)) < 0 || end == i || t.s[i] == ' ' || t.s[i] == '\t')
            goto decline;
        colon_at = memchr(t.s + i, ':', end - i);
        if (colon_at == NULL) goto decline;
        colon = colon_at - t.s;
        if ((name = sub(&t, i, colon)) == NULL) goto error;
        key = PyDict_GetItemWithError(args[1], name);  /* borrowed */
        if (key == NULL) {
            if (PyErr_Occurred()) goto error;
            goto decline;
        }
        if (only) {
            Py_CLEAR(name);
            if (PyList_Append(out, key) < 0) goto error;
            continue;
        }
        for (a = colon + 1; a < end && (t.s[a] == ' ' || t.s[a] == '\t'); a++);
        for (b = end; b > a && (t.s[b - 1] == ' ' || t.s[b - 1] == '\t'); b--);
        if ((value = sub(&t, a, b)) == NULL) goto error;
        item = PyTuple_Pack(3, key, name, value);
        Py_CLEAR(name);
        Py_CLEAR(value);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto error;
        }
        Py_DECREF(item);
    }
    return out;
decline:
    Py_XDECREF(name);
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(name);
    Py_XDECREF(value);
    Py_DECREF(out);
    return NULL;
}

/* An ASCII str's characters and length; 0 for anything else. */
static int
ascii_of(PyObject *obj, const char **s, Py_ssize_t *n)
{
    if (!PyUnicode_Check(obj) || PyUnicode_READY(obj) < 0 || !PyUnicode_IS_ASCII(obj))
        return 0;
    *s = (const char *)PyUnicode_1BYTE_DATA(obj);
    *n = PyUnicode_GET_LENGTH(obj);
    return 1;
}

/* serialize(start, headers, body) -> the message's bytes, as __bytes__
 * joins them: start CRLF, "name: value" CRLF per header, CRLF, body. None
 * (the caller joins them) unless the start line and every header's name and
 * value are ASCII str, there is a header at all, and the body is bytes. */
static PyObject *
fast_serialize(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *s;
    Py_ssize_t n, total, count, k;
    PyObject *headers, *out;
    char *w;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "serialize(start, headers, body)");
        return NULL;
    }
    if (!PyList_Check(args[1]) || !PyBytes_Check(args[2])) Py_RETURN_NONE;
    headers = args[1];
    count = PyList_GET_SIZE(headers);
    if (!count || !ascii_of(args[0], &s, &n)) Py_RETURN_NONE;
    total = n + 2 + 2 + PyBytes_GET_SIZE(args[2]);
    for (k = 0; k < count; k++) {
        PyObject *item = PyList_GET_ITEM(headers, k);
        Py_ssize_t a, b;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3
            || !ascii_of(PyTuple_GET_ITEM(item, 1), &s, &a)
            || !ascii_of(PyTuple_GET_ITEM(item, 2), &s, &b))
            Py_RETURN_NONE;
        total += a + 2 + b + 2;
    }
    if ((out = PyBytes_FromStringAndSize(NULL, total)) == NULL) return NULL;
    w = PyBytes_AS_STRING(out);
    ascii_of(args[0], &s, &n);
    memcpy(w, s, n), w += n;
    *w++ = '\r', *w++ = '\n';
    for (k = 0; k < count; k++) {  /* every item was checked above; nothing ran since */
        PyObject *item = PyList_GET_ITEM(headers, k);
        ascii_of(PyTuple_GET_ITEM(item, 1), &s, &n);
        memcpy(w, s, n), w += n;
        *w++ = ':', *w++ = ' ';
        ascii_of(PyTuple_GET_ITEM(item, 2), &s, &n);
        memcpy(w, s, n), w += n;
        *w++ = '\r', *w++ = '\n';
    }
    *w++ = '\r', *w++ = '\n';
    memcpy(w, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    return out;
}

static PyObject *
fast_bind(PyObject *self, PyObject *args)
{
    PyObject *uri, *address, *via;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyType_Type, &uri, &PyType_Type, &address,
                          &PyType_Type, &via))
        return NULL;
    Py_XSETREF(SIPURI_t, Py_NewRef(uri));
    Py_XSETREF(Address_t, Py_NewRef(address));
    Py_XSETREF(Via_t, Py_NewRef(via));
    Py_RETURN_NONE;
}

/* accessor(slot, fget, fset=None, key=None): a property whose usual read
 * runs no Python. `slot` is a __slots__ member of the class that owns it.
 * Without `key` a read gives the slot's value; with `key`, the value under
 * `key` in the dict the slot holds (Message._cache). When that is unset or
 * None, or the object is not an instance of the slot's class, fget(obj)
 * decides, as the property would. Setting calls fset (AttributeError without
 * one); deleting is refused. A property read is a Python call, and
 * Message's cached fields and plain slots are read dozens of times per
 * message. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *owner;
    Py_ssize_t offset;
    PyObject *key, *fget, *fset, *doc;
} Accessor;

static PyObject *
accessor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"slot", "fget", "fset", "key", NULL};
    PyObject *slot, *fget, *fset = Py_None, *key = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OO:accessor", kw, &slot, &fget, &fset, &key))
        return NULL;
    if (!Py_IS_TYPE(slot, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)slot)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "accessor: slot must be a __slots__ member");
        return NULL;
    }
    if (!PyCallable_Check(fget) || (fset != Py_None && !PyCallable_Check(fset))) {
        PyErr_SetString(PyExc_TypeError, "accessor: fget and fset must be callable");
        return NULL;
    }
    if (key != Py_None && !PyUnicode_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "accessor: key must be a str");
        return NULL;
    }
    PyObject *doc = PyObject_GetAttrString(fget, "__doc__");
    if (doc == NULL) {
        PyErr_Clear();
        doc = Py_NewRef(Py_None);
    }
    Accessor *self = (Accessor *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(doc);
        return NULL;
    }
    self->owner = (PyTypeObject *)Py_NewRef(((PyDescrObject *)slot)->d_type);
    self->offset = ((PyMemberDescrObject *)slot)->d_member->offset;
    self->key = key == Py_None ? NULL : Py_NewRef(key);
    self->fget = Py_NewRef(fget);
    self->fset = fset == Py_None ? NULL : Py_NewRef(fset);
    self->doc = doc;
    return (PyObject *)self;
}

static int
accessor_traverse(Accessor *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->key);
    Py_VISIT(self->fget);
    Py_VISIT(self->fset);
    Py_VISIT(self->doc);
    return 0;
}

static int
accessor_clear(Accessor *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->key);
    Py_CLEAR(self->fget);
    Py_CLEAR(self->fset);
    Py_CLEAR(self->doc);
    return 0;
}

static void
accessor_dealloc(Accessor *self)
{
    PyObject_GC_UnTrack(self);
    accessor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
accessor_get(Accessor *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    if (self->owner != NULL && PyObject_TypeCheck(obj, self->owner)) {
        PyObject *value = *(PyObject **)((char *)obj + self->offset);
        if (value != NULL && self->key != NULL) {
            if (!PyDict_CheckExact(value))
                value = NULL;
            else if ((value = PyDict_GetItemWithError(value, self->key)) == NULL
                     && PyErr_Occurred())
                return NULL;
        }
        if (value != NULL && value != Py_None)
            return Py_NewRef(value);
    }
    if (self->fget == NULL) {
        PyErr_SetString(PyExc_AttributeError, "accessor: cleared");
        return NULL;
    }
    return PyObject_CallOneArg(self->fget, obj);
}

static int
accessor_set(Accessor *self, PyObject *obj, PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "can't delete attribute");
        return -1;
    }
    if (self->fset == NULL) {
        PyErr_SetString(PyExc_AttributeError, "can't set attribute");
        return -1;
    }
    PyObject *res = PyObject_CallFunctionObjArgs(self->fset, obj, value, NULL);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

static PyMemberDef accessor_members[] = {
    {"fget", T_OBJECT, offsetof(Accessor, fget), READONLY, NULL},
    {"fset", T_OBJECT, offsetof(Accessor, fset), READONLY, NULL},
    {"key", T_OBJECT, offsetof(Accessor, key), READONLY, NULL},
    {"__doc__", T_OBJECT, offsetof(Accessor, doc), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject Accessor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sbc.sip._fast.accessor",
    .tp_basicsize = sizeof(Accessor),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "accessor(slot, fget, fset=None, key=None): a property reading a slot, "
              "or the value under key in the dict it holds, without a Python call.",
    .tp_new = accessor_new,
    .tp_dealloc = (destructor)accessor_dealloc,
    .tp_traverse = (traverseproc)accessor_traverse,
    .tp_clear = (inquiry)accessor_clear,
    .tp_descr_get = (descrgetfunc)accessor_get,
    .tp_descr_set = (descrsetfunc)accessor_set,
    .tp_members = accessor_members,
};

static PyMethodDef methods[] = {
    {"bind", fast_bind, METH_VARARGS, "bind(SIPURI, Address, Via): the classes to build."},
    {"address", (PyCFunction)(void (*)(void))fast_address, METH_FASTCALL,
     "address(text, names, only) -> Address or None"},
    {"via", (PyCFunction)(void (*)(void))fast_via, METH_FASTCALL, "via(text, names) -> Via or None"},
    {"cseq", (PyCFunction)(void (*)(void))fast_cseq, METH_FASTCALL,
     "cseq(text, names) -> (seq, method) or None"},
    {"value", (PyCFunction)(void (*)(void))fast_value, METH_FASTCALL,
     "value(text, names) -> str, None (absent) or False (folded)"},
    {"split", (PyCFunction)(void (*)(void))fast_split, METH_FASTCALL,
     "split(text, keys, only_keys=False) -> [(key, name, value)] (or [key]) or None"},
    {"serialize", (PyCFunction)(void (*)(void))fast_serialize, METH_FASTCALL,
     "serialize(start, headers, body) -> bytes or None (not all ASCII str)"},
    {"values", (PyCFunction)(void (*)(void))fast_values, METH_FASTCALL,
     "values(text, names) -> [str] or False (folded)"},
    {"patch", (PyCFunction)(void (*)(void))fast_patch, METH_FASTCALL,
     "patch(text, raw, at, names, value) -> (text, raw), None (no one line) or False"},
    {"token", (PyCFunction)(void (*)(void))fast_token, METH_FASTCALL,
     "token(text, names, only) -> str or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast", "Native fast path for SIP header accessors.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fast(void)
{
    classes();
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_scheme, "scheme");
    INTERN(s_user, "user");
    INTERN(s_password, "password");
    INTERN(s_host, "host");
    INTERN(s_port, "port");
    INTERN(s_params, "params");
    INTERN(s_headers, "headers");
    INTERN(s_uri, "uri");
    INTERN(s_display, "display");
    INTERN(s_transport, "transport");
#undef INTERN
    if (PyType_Ready(&Accessor_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "accessor", Py_NewRef((PyObject *)&Accessor_Type)) < 0) {
        Py_DECREF((PyObject *)&Accessor_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
