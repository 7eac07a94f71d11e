/*
 * wakeproxy.http._fieldscan: HTTP heads read in one call each.
 *
 * scan is the C twin of wire.scan_fields_py (the pure-Python reference, used when this module is not built; both
 * pass the same tests). The head was validated by llhttp first, so every field line is
 * "\r\n" name ":" OWS value, with no CR or LF inside a line.
 *
 *   scan(raw, roles, keep_below) -> (start_line, kept, special)
 *
 * raw: a whole head ending in "\r\n\r\n"; start_line: its first line, without the CRLF.
 * roles: lower-cased field name -> int role (absent: 0, a field passed on as it is).
 * kept: the bytes of every field line whose role is 0 or below keep_below, each line preceded by CRLF,
 *       as received. special: a list of (role, name, value) for every field whose role is not 0, in
 *       order, value without its leading whitespace (trailing whitespace kept, as llhttp gives it).
 *
 *   plain_response(raw, roles) -> None or (status, status_line, reason, kept, length, keep_alive, chunked)
 *
 * The common response head read whole without llhttp: an HTTP/1.1 final response (200-599) whose every
 * line is plainly valid (token names, visible ASCII, spaces and tabs in values, CRLF line ends) and whose
 * framing is plain (at most one Content-Length of digits, or one "Transfer-Encoding: chunked"; at most one
 * Connection of keep-alive or close; no Via; at most MAX_FIELDS fields). Anything else returns None and
 * wire.py asks llhttp, so this accepts only heads llhttp accepts and reads them as wire.py reads them
 * (tests/test_wire.py compares the two on random heads). roles: wire._RESPONSE_ROLES; the role numbers
 * are ROLES below (wire.py checks them at import).
 *
 *   plain_request(raw, roles) -> None or (method, target, kept, host, cookie, noted, length, keep_alive,
 *                                         relayed)
 *
 * The same for the common request head: GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH, one space, an
 * origin-form target of RFC 3986 path and query characters, " HTTP/1.1", plainly valid lines, exactly one
 * Host, at most one Content-Length of digits, at most one Connection of keep-alive or close, and no
 * Expect, Transfer-Encoding or Upgrade (those go through llhttp and wire.py's checks). kept: as scan's
 * with keep_below wire._CODING; cookie: a tuple of the Cookie values; noted: the first value of each noted
 * field by lower-cased name, or None; relayed: None, or (the forwarding headers as [(lower-cased name,
 * value)] or None, the Via values or None). roles: wire._REQUEST_ROLES.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/*
 * Roles by field name as received, remembered: most heads repeat the same names in the same case, and
 * a hit costs a hash of the name instead of a lower-cased copy, a bytes object and a dictionary look-up.
 * An entry holds a reference to its roles table (so no other table can take its address); a table is
 * read once per name, so it must not change after its first use (wire.py's are constants).
 */
#define CACHE_SLOTS 512
#define CACHE_NAME 40

typedef struct {
    PyObject *roles;
    long role;
    Py_ssize_t length;
    char name[CACHE_NAME];
} cached_role;

static cached_role cache[CACHE_SLOTS];

static long
role_of(PyObject *roles, const char *name, Py_ssize_t length)
{
    cached_role *slot = NULL;
    if (length <= CACHE_NAME) {
        size_t hash = (size_t)roles >> 4;
        for (Py_ssize_t i = 0; i < length; i++)
            hash = (hash ^ (unsigned char)name[i]) * 1099511628211u;
        slot = &cache[(hash ^ (hash >> 29)) % CACHE_SLOTS];
        if (slot->roles == roles && slot->length == length && memcmp(slot->name, name, (size_t)length) == 0)
            return slot->role;
    }
    PyObject *key = PyBytes_FromStringAndSize(NULL, length);
    if (key == NULL)
        return -1;
    char *lower = PyBytes_AS_STRING(key);
    for (Py_ssize_t i = 0; i < length; i++)
        lower[i] = Py_TOLOWER(name[i]);
    PyObject *found = PyDict_GetItemWithError(roles, key); /* borrowed */
    Py_DECREF(key);
    long role = 0;
    if (found != NULL) {
        role = PyLong_AsLong(found);
        if (role == -1 && PyErr_Occurred())
            return -1;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    if (slot != NULL) {
        Py_INCREF(roles);
        Py_XDECREF(slot->roles);
        slot->roles = roles;
        slot->role = role;
        slot->length = length;
        memcpy(slot->name, name, (size_t)length);
    }
    return role;
}

static PyObject *
scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyLong_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "scan(raw: bytes, roles: dict, keep_below: int)");
        return NULL;
    }
    const char *raw = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    PyObject *roles = args[1];
    long keep_below = PyLong_AsLong(args[2]);
    if (keep_below == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t end = size - 4; /* the final "\r\n\r\n" */
    const char *first_end = size >= 4 ? memchr(raw, '\r', (size_t)size) : NULL;
    if (first_end == NULL || memcmp(raw + end, "\r\n\r\n", 4) != 0 || first_end - raw > end) {
        PyErr_SetString(PyExc_ValueError, "not a whole head: it must end in an empty line");
        return NULL;
    }
    Py_ssize_t start = first_end - raw;
    PyObject *special = NULL;
    PyObject *first = PyBytes_FromStringAndSize(raw, start);
    if (first == NULL)
        return NULL;
    PyObject *kept = PyBytes_FromStringAndSize(NULL, end - start);
    if (kept == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(kept);
    Py_ssize_t used = 0;
    special = PyList_New(0);
    if (special == NULL)
        goto fail;
    Py_ssize_t p = start;
    while (p < end) {
        const char *line = raw + p + 2;
        Py_ssize_t room = end - (p + 2);
        const char *cr = memchr(line, '\r', (size_t)room);
        Py_ssize_t length = cr ? cr - line : room;
        const char *colon = memchr(line, ':', (size_t)length);
        if (colon == NULL) {
            PyErr_SetString(PyExc_ValueError, "a field line without a colon");
            goto fail;
        }
        Py_ssize_t name_length = colon - line;
        long role = role_of(roles, line, name_length);
        if (role == -1 && PyErr_Occurred())
            goto fail;
        if (role == 0 || role < keep_below) {
            memcpy(out + used, raw + p, (size_t)(length + 2));
            used += length + 2;
        }
        if (role != 0) {
            const char *value = colon + 1;
            const char *stop = line + length;
            while (value < stop && (*value == ' ' || *value == '\t'))
                value++;
            PyObject *item = PyTuple_New(3);
            if (item == NULL)
                goto fail;
            PyObject *number = PyLong_FromLong(role);
            PyObject *name = PyBytes_FromStringAndSize(line, name_length);
            PyObject *text = PyBytes_FromStringAndSize(value, stop - value);
            PyTuple_SET_ITEM(item, 0, number);
            PyTuple_SET_ITEM(item, 1, name);
            PyTuple_SET_ITEM(item, 2, text);
            if (number == NULL || name == NULL || text == NULL) {
                Py_DECREF(item);
                goto fail;
            }
            int failed = PyList_Append(special, item);
            Py_DECREF(item);
            if (failed)
                goto fail;
        }
        p += length + 2;
    }
    if (used != end - start && _PyBytes_Resize(&kept, used) < 0) {
        Py_DECREF(first);
        Py_DECREF(special);
        return NULL;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(first);
        Py_DECREF(kept);
        Py_DECREF(special);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, first);
    PyTuple_SET_ITEM(result, 1, kept);
    PyTuple_SET_ITEM(result, 2, special);
    return result;

fail:
    Py_DECREF(first);
    Py_XDECREF(kept);
    Py_XDECREF(special);
    return NULL;
}

/* the roles of wire.py's tables (wire checks ROLES below at import) */
enum {
    ROLE_COOKIE = 1, ROLE_HOST, ROLE_LENGTH, ROLE_EXPECT, ROLE_NOTE, ROLE_CODING, ROLE_CONNECTION, ROLE_UPGRADE,
    ROLE_FORWARDING, ROLE_VIA, ROLE_HOP
};
#define MAX_FIELDS 100
#define MAX_LENGTH_DIGITS 18

/* byte classes, filled at import: a field-name byte (RFC 9110 tchar), a field-value or reason byte this path
 * accepts (SP, HTAB, visible ASCII; obs-text is left to llhttp), a request-target byte (RFC 3986 path and
 * query characters; anything else is left to llhttp) */
enum { TCHAR = 1, PLAIN = 2, TARGET = 4 };
static unsigned char kind[256];

static void
fill_kinds(void)
{
    for (int c = 0x21; c < 0x7f; c++) {
        kind[c] |= PLAIN;
        if (((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9')) {
            kind[c] |= TCHAR | TARGET;
        }
    }
    kind[' '] |= PLAIN;
    kind['\t'] |= PLAIN;
    for (const char *t = "!#$%&'*+-.^_`|~"; *t; t++)
        kind[(unsigned char)*t] |= TCHAR;
    for (const char *t = "-._~%!$&'()*+,;=:@/?"; *t; t++)
        kind[(unsigned char)*t] |= TARGET;
}

/* One field line, found by plain_field: raw[start:start+2] is the CRLF before it, its name is
 * raw[start+2:colon], its value raw[value:end] (leading whitespace skipped), and raw[end] the CR ending it. */
typedef struct {
    Py_ssize_t start, colon, value, end;
} field_line;

#define NOT_PLAIN (-2)

/* The role of the line after the CRLF at p (its bounds in f) when it is plainly valid (a token name, a
 * colon, plain bytes, CRLF) and the head's fields-th: NOT_PLAIN if not, -1 if looking up its role failed. */
static long
plain_field(const unsigned char *raw, Py_ssize_t p, Py_ssize_t stop, PyObject *roles, Py_ssize_t fields,
            field_line *f)
{
    Py_ssize_t q = p + 2;
    while (kind[raw[q]] & TCHAR)
        q++;
    if (q == p + 2 || raw[q] != ':' || fields > MAX_FIELDS)
        return NOT_PLAIN;
    f->start = p;
    f->colon = q++;
    while (q < stop && raw[q] != '\r') {
        if (!(kind[raw[q]] & PLAIN))
            return NOT_PLAIN;
        q++;
    }
    if (raw[q + 1] != '\n')
        return NOT_PLAIN;
    f->end = q;
    q = f->colon + 1;
    while (q < f->end && (raw[q] == ' ' || raw[q] == '\t'))
        q++;
    f->value = q;
    return role_of(roles, (const char *)raw + p + 2, f->colon - (p + 2));
}

/* A Content-Length value: digits (trailing whitespace allowed), at most MAX_LENGTH_DIGITS; -1 if not */
static long long
plain_length(const unsigned char *raw, const field_line *f)
{
    Py_ssize_t n = f->end;
    while (n > f->value && (raw[n - 1] == ' ' || raw[n - 1] == '\t'))
        n--;
    if (n == f->value || n - f->value > MAX_LENGTH_DIGITS)
        return -1;
    long long length = 0;
    for (Py_ssize_t i = f->value; i < n; i++) {
        if (raw[i] < '0' || raw[i] > '9')
            return -1;
        length = length * 10 + (raw[i] - '0');
    }
    return length;
}

/* A Connection value: 1 for keep-alive, 0 for close (either alone, any case), -1 for anything else */
static int
plain_keep_alive(const unsigned char *raw, const field_line *f)
{
    Py_ssize_t n = f->end;
    while (n > f->value && (raw[n - 1] == ' ' || raw[n - 1] == '\t'))
        n--;
    const unsigned char *v = raw + f->value;
    Py_ssize_t size = n - f->value;
    if (size == 10 && PyOS_strnicmp((const char *)v, "keep-alive", 10) == 0)
        return 1;
    if (size == 5 && PyOS_strnicmp((const char *)v, "close", 5) == 0)
        return 0;
    return -1;
}

/* The kept lines, as received, each with the CRLF before it, in one bytes object */
static PyObject *
join_lines(const unsigned char *raw, const field_line *lines, Py_ssize_t count)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < count; i++)
        size += lines[i].end - lines[i].start;
    PyObject *joined = PyBytes_FromStringAndSize(NULL, size);
    if (joined == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(joined);
    for (Py_ssize_t i = 0; i < count; i++) {
        memcpy(out, raw + lines[i].start, (size_t)(lines[i].end - lines[i].start));
        out += lines[i].end - lines[i].start;
    }
    return joined;
}

static PyObject *
value_of(const unsigned char *raw, const field_line *f)
{
    return PyBytes_FromStringAndSize((const char *)raw + f->value, f->end - f->value);
}

static PyObject *
lower_name_of(const unsigned char *raw, const field_line *f)
{
    Py_ssize_t n = f->colon - (f->start + 2);
    PyObject *name = PyBytes_FromStringAndSize(NULL, n);
    if (name != NULL) {
        char *lower = PyBytes_AS_STRING(name);
        for (Py_ssize_t k = 0; k < n; k++)
            lower[k] = Py_TOLOWER(raw[f->start + 2 + k]);
    }
    return name;
}

/* [(lower-cased name, value)] of lines (names) or [value] (values only), or None when there are none */
static PyObject *
list_of(const unsigned char *raw, const field_line *lines, Py_ssize_t count, int names)
{
    if (count == 0)
        return Py_NewRef(Py_None);
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = names ? Py_BuildValue("(NN)", lower_name_of(raw, &lines[i]), value_of(raw, &lines[i]))
                               : value_of(raw, &lines[i]);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* The arguments (raw, roles): 1 and raw's bytes and size if it is a whole head (ends in an empty line) of at
 * least `least` bytes, 0 if not, -1 (an error set) if they are not bytes and a dict */
static int
whole(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t least, const unsigned char **raw, Py_ssize_t *size)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "(raw: bytes, roles: dict)");
        return -1;
    }
    *raw = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    *size = PyBytes_GET_SIZE(args[0]);
    return *size >= least && memcmp(*raw + *size - 4, "\r\n\r\n", 4) == 0;
}

static PyObject *
plain_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *raw;
    Py_ssize_t size;
    int ok = whole(args, nargs, 16, &raw, &size);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *roles = args[1];
    /* "HTTP/1.1 " three digits, 200-599, then CRLF or a space and a reason */
    if (memcmp(raw, "HTTP/1.1 ", 9) != 0 || raw[9] < '2' || raw[9] > '5' || raw[10] < '0' || raw[10] > '9'
            || raw[11] < '0' || raw[11] > '9' || (raw[12] != ' ' && raw[12] != '\r'))
        Py_RETURN_NONE;
    Py_ssize_t end = size - 2; /* the blank line's CRLF */
    Py_ssize_t p = 12;
    while (p < end && raw[p] != '\r') {
        if (!(kind[raw[p]] & PLAIN))
            Py_RETURN_NONE;
        p++;
    }
    if (raw[p + 1] != '\n')
        Py_RETURN_NONE;
    Py_ssize_t status_end = p;
    long status = (raw[9] - '0') * 100 + (raw[10] - '0') * 10 + (raw[11] - '0');
    long long length = -1;
    int chunked = 0, keep_alive = 1, connection = 0;
    field_line kept[MAX_FIELDS], f;
    Py_ssize_t count = 0, fields = 0;
    for (; p + 2 < end; p = f.end) { /* raw[p:p+2] is the CRLF ending the previous line */
        long role = plain_field(raw, p, end, roles, ++fields, &f);
        if (role < 0)
            return role == NOT_PLAIN ? Py_NewRef(Py_None) : NULL;
        switch (role) {
        case 0:
            kept[count++] = f;
            break;
        case ROLE_LENGTH:
            if (length >= 0 || (length = plain_length(raw, &f)) < 0)
                Py_RETURN_NONE;
            break;
        case ROLE_CODING: /* "chunked" as wire.py's default coding spells it, alone */
            if (chunked || f.end - f.value != 7 || memcmp(raw + f.value, "chunked", 7) != 0)
                Py_RETURN_NONE;
            chunked = 1;
            break;
        case ROLE_CONNECTION:
            if (connection++ || (keep_alive = plain_keep_alive(raw, &f)) < 0)
                Py_RETURN_NONE;
            break;
        case ROLE_HOP:
            break;
        default: /* Via, or a role this path does not know */
            Py_RETURN_NONE;
        }
    }
    if (chunked && length >= 0)
        Py_RETURN_NONE;
    Py_ssize_t reason = status_end > 13 ? 13 : status_end;
    while (reason < status_end && raw[reason] == ' ')
        reason++;
    return Py_BuildValue("(lNNNNOO)", status, PyBytes_FromStringAndSize((const char *)raw, status_end),
                         PyBytes_FromStringAndSize((const char *)raw + reason, status_end - reason),
                         join_lines(raw, kept, count),
                         length >= 0 ? PyLong_FromLongLong(length) : Py_NewRef(Py_None),
                         keep_alive ? Py_True : Py_False, chunked ? Py_True : Py_False);
}

/* the methods plain_request reads (any other is left to llhttp, which knows its own list), made once */
static const char *const METHOD_NAMES[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
#define METHODS ((Py_ssize_t)(sizeof(METHOD_NAMES) / sizeof(METHOD_NAMES[0])))
static PyObject *methods_made[METHODS];

static PyObject *
plain_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *raw;
    Py_ssize_t size;
    int ok = whole(args, nargs, 18, &raw, &size);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *roles = args[1];
    /* a method this path knows, one space, an origin-form target, " HTTP/1.1" CRLF */
    PyObject *method = NULL;
    Py_ssize_t p = 0;
    for (Py_ssize_t m = 0; m < METHODS; m++) {
        size_t n = strlen(METHOD_NAMES[m]);
        if (memcmp(raw, METHOD_NAMES[m], n) == 0 && raw[n] == ' ') {
            method = methods_made[m];
            p = (Py_ssize_t)n + 1;
            break;
        }
    }
    Py_ssize_t end = size - 2; /* the blank line's CRLF */
    if (method == NULL || raw[p] != '/')
        Py_RETURN_NONE;
    Py_ssize_t target = p;
    while (kind[raw[p]] & TARGET)
        p++;
    Py_ssize_t target_end = p;
    if (p + 11 > end + 2 || memcmp(raw + p, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NONE;
    p += 9;
    long long length = 0;
    int keep_alive = 1, connection = 0, lengths = 0;
    field_line kept[MAX_FIELDS], cookies[MAX_FIELDS], noted[MAX_FIELDS], forwarding[MAX_FIELDS], vias[MAX_FIELDS];
    field_line host, f;
    Py_ssize_t count = 0, cookie_count = 0, noted_count = 0, forwarding_count = 0, via_count = 0, fields = 0;
    Py_ssize_t hosts = 0;
    for (; p + 2 < end; p = f.end) {
        long role = plain_field(raw, p, end, roles, ++fields, &f);
        if (role < 0)
            return role == NOT_PLAIN ? Py_NewRef(Py_None) : NULL;
        switch (role) {
        case 0:
            break;
        case ROLE_COOKIE:
            cookies[cookie_count++] = f;
            break;
        case ROLE_HOST:
            if (hosts++)
                Py_RETURN_NONE;
            host = f;
            break;
        case ROLE_LENGTH:
            if (lengths++ || (length = plain_length(raw, &f)) < 0)
                Py_RETURN_NONE;
            break;
        case ROLE_NOTE:
            noted[noted_count++] = f;
            break;
        case ROLE_CONNECTION:
            if (connection++ || (keep_alive = plain_keep_alive(raw, &f)) < 0)
                Py_RETURN_NONE;
            continue; /* not passed on */
        case ROLE_FORWARDING: /* not passed on: rebuilt or extended by headers.request_head */
            forwarding[forwarding_count++] = f;
            continue;
        case ROLE_VIA:
            vias[via_count++] = f;
            continue;
        case ROLE_HOP:
            continue;
        default: /* Expect, Transfer-Encoding, Upgrade: left to llhttp and wire.py */
            Py_RETURN_NONE;
        }
        kept[count++] = f;
    }
    if (hosts != 1)
        Py_RETURN_NONE;
    PyObject *cookie = PyTuple_New(cookie_count), *notes = NULL, *relayed = NULL;
    if (cookie == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < cookie_count; i++) {
        PyObject *value = value_of(raw, &cookies[i]);
        if (value == NULL)
            goto fail;
        PyTuple_SET_ITEM(cookie, i, value);
    }
    if (noted_count) { /* the first value of each, by lower-cased name */
        notes = PyDict_New();
        if (notes == NULL)
            goto fail;
        for (Py_ssize_t i = 0; i < noted_count; i++) {
            PyObject *name = lower_name_of(raw, &noted[i]);
            if (name == NULL)
                goto fail;
            PyObject *value = value_of(raw, &noted[i]);
            PyObject *had = value ? PyDict_SetDefault(notes, name, value) : NULL;
            Py_DECREF(name);
            Py_XDECREF(value);
            if (had == NULL)
                goto fail;
        }
    }
    if (forwarding_count || via_count) { /* (forwarding headers, Via values), as wire.py reads them */
        relayed = Py_BuildValue("(NN)", list_of(raw, forwarding, forwarding_count, 1),
                                list_of(raw, vias, via_count, 0));
        if (relayed == NULL)
            goto fail;
    }
    return Py_BuildValue("(ONNNNNNON)", method,
                         PyBytes_FromStringAndSize((const char *)raw + target, target_end - target),
                         join_lines(raw, kept, count), value_of(raw, &host), cookie,
                         notes ? notes : Py_NewRef(Py_None), PyLong_FromLongLong(length),
                         keep_alive ? Py_True : Py_False, relayed ? relayed : Py_NewRef(Py_None));
fail:
    Py_DECREF(cookie);
    Py_XDECREF(notes);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(raw, roles, keep_below) -> (start_line, kept, special): a validated head's lines by role."},
    {"plain_response", (PyCFunction)(void (*)(void))plain_response, METH_FASTCALL,
     "plain_response(raw, roles) -> None or (status, status_line, reason, kept, length, keep_alive, chunked)."},
    {"plain_request", (PyCFunction)(void (*)(void))plain_request, METH_FASTCALL,
     "plain_request(raw, roles) -> None or (method, target, kept, host, cookie, noted, length, keep_alive, "
     "relayed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wakeproxy.http._fieldscan",
    "HTTP heads read in one call each: common heads whole, any head's fields by role (see wire.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fieldscan(void)
{
    fill_kinds();
    for (Py_ssize_t m = 0; m < METHODS; m++) {
        if (methods_made[m] == NULL && (methods_made[m] = PyBytes_FromString(METHOD_NAMES[m])) == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *numbers = Py_BuildValue("(iiiiiiiiiii)", ROLE_COOKIE, ROLE_HOST, ROLE_LENGTH, ROLE_EXPECT, ROLE_NOTE,
                                      ROLE_CODING, ROLE_CONNECTION, ROLE_UPGRADE, ROLE_FORWARDING, ROLE_VIA, ROLE_HOP);
    if (numbers == NULL || PyModule_AddObject(m, "ROLES", numbers) < 0) {
        Py_XDECREF(numbers);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
