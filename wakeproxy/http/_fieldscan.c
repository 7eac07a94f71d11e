/*
 * wakeproxy.http._fieldscan: the field lines of an HTTP head sorted by role, in one call.
 *
 * The C twin of wire._scan_fields (the pure-Python reference, used when this module is not built; both
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
 * are RESPONSE_ROLES below (wire.py checks them at import).
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

/* the response roles plain_response knows (wire._LENGTH, _CODING, _CONNECTION, _VIA, _HOP) */
enum { ROLE_LENGTH = 3, ROLE_CODING = 6, ROLE_CONNECTION = 7, ROLE_VIA = 10, ROLE_HOP = 11 };
#define MAX_FIELDS 100
#define MAX_LENGTH_DIGITS 18

/* RFC 9110 tchar */
static int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* a field value or reason byte this path accepts: SP, HTAB, visible ASCII (obs-text is left to llhttp) */
#define PLAIN(c) (((c) >= 0x20 && (c) < 0x7f) || (c) == '\t')

/* v[0:n] without trailing spaces and tabs, compared case-insensitively with a lower-case word */
static int
is_word(const char *v, Py_ssize_t n, const char *word)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if ((size_t)n != strlen(word))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (Py_TOLOWER(v[i]) != word[i])
            return 0;
    return 1;
}

static PyObject *
plain_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "plain_response(raw: bytes, roles: dict)");
        return NULL;
    }
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    PyObject *roles = args[1];
    /* "HTTP/1.1 " three digits, 200-599, then CRLF or a space and a reason */
    if (size < 16 || memcmp(raw, "HTTP/1.1 ", 9) != 0 || raw[9] < '2' || raw[9] > '5' || raw[10] < '0'
            || raw[10] > '9' || raw[11] < '0' || raw[11] > '9' || (raw[12] != ' ' && raw[12] != '\r')
            || memcmp(raw + size - 4, "\r\n\r\n", 4) != 0)
        Py_RETURN_NONE;
    Py_ssize_t end = size - 2; /* the blank line's CRLF */
    Py_ssize_t p = 12;
    while (p < end && raw[p] != '\r') {
        if (!PLAIN(raw[p]))
            Py_RETURN_NONE;
        p++;
    }
    if (raw[p + 1] != '\n')
        Py_RETURN_NONE;
    Py_ssize_t status_end = p;
    long status = (raw[9] - '0') * 100 + (raw[10] - '0') * 10 + (raw[11] - '0');
    long long length = -1;
    int chunked = 0, keep_alive = 1, connection = 0, fields = 0;
    /* first pass: validate and read the framing, noting the kept lines; nothing allocated before the end */
    Py_ssize_t kept_size = 0, kept_lines = 0;
    Py_ssize_t kept_at[MAX_FIELDS][2];
    while (p < end) { /* raw[p:p+2] is the CRLF ending the previous line */
        Py_ssize_t line = p + 2, q = line;
        if (line >= end)
            break;
        while (is_tchar(raw[q]))
            q++;
        if (q == line || raw[q] != ':' || ++fields > MAX_FIELDS)
            Py_RETURN_NONE;
        Py_ssize_t colon = q++;
        while (q < end && raw[q] != '\r') {
            if (!PLAIN(raw[q]))
                Py_RETURN_NONE;
            q++;
        }
        if (raw[q + 1] != '\n')
            Py_RETURN_NONE;
        long role = role_of(roles, (const char *)raw + line, colon - line);
        if (role == -1 && PyErr_Occurred())
            return NULL;
        Py_ssize_t v = colon + 1;
        while (v < q && (raw[v] == ' ' || raw[v] == '\t'))
            v++;
        switch (role) {
        case 0:
            kept_at[kept_lines][0] = p;
            kept_at[kept_lines++][1] = q - p;
            kept_size += q - p;
            break;
        case ROLE_LENGTH: {
            Py_ssize_t n = q;
            while (n > v && (raw[n - 1] == ' ' || raw[n - 1] == '\t'))
                n--;
            if (length >= 0 || n == v || n - v > MAX_LENGTH_DIGITS)
                Py_RETURN_NONE;
            length = 0;
            for (Py_ssize_t i = v; i < n; i++) {
                if (raw[i] < '0' || raw[i] > '9')
                    Py_RETURN_NONE;
                length = length * 10 + (raw[i] - '0');
            }
            break;
        }
        case ROLE_CODING: /* "chunked" as wire.py's default coding spells it, alone */
            if (chunked || q - v != 7 || memcmp(raw + v, "chunked", 7) != 0)
                Py_RETURN_NONE;
            chunked = 1;
            break;
        case ROLE_CONNECTION:
            if (connection++)
                Py_RETURN_NONE;
            if (is_word((const char *)raw + v, q - v, "close"))
                keep_alive = 0;
            else if (!is_word((const char *)raw + v, q - v, "keep-alive"))
                Py_RETURN_NONE;
            break;
        case ROLE_HOP:
            break;
        default: /* Via, or a role this path does not know */
            Py_RETURN_NONE;
        }
        p = q;
    }
    if (chunked && length >= 0)
        Py_RETURN_NONE;
    /* the kept lines, as received, each with the CRLF before it */
    PyObject *kept = PyBytes_FromStringAndSize(NULL, kept_size);
    if (kept == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(kept);
    for (Py_ssize_t i = 0; i < kept_lines; i++) {
        memcpy(out, raw + kept_at[i][0], (size_t)kept_at[i][1]);
        out += kept_at[i][1];
    }
    Py_ssize_t reason = status_end > 13 ? 13 : status_end;
    while (reason < status_end && raw[reason] == ' ')
        reason++;
    PyObject *length_object = length >= 0 ? PyLong_FromLongLong(length) : Py_NewRef(Py_None);
    return Py_BuildValue("(lNNNNOO)", status,
                         PyBytes_FromStringAndSize((const char *)raw, status_end),
                         PyBytes_FromStringAndSize((const char *)raw + reason, status_end - reason),
                         kept, length_object, keep_alive ? Py_True : Py_False, chunked ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(raw, roles, keep_below) -> (start_line, kept, special): a validated head's lines by role."},
    {"plain_response", (PyCFunction)(void (*)(void))plain_response, METH_FASTCALL,
     "plain_response(raw, roles) -> None or (status, status_line, reason, kept, length, keep_alive, chunked)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wakeproxy.http._fieldscan",
    "The field lines of a validated HTTP head sorted by role (the C twin of wire._scan_fields).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fieldscan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *numbers = Py_BuildValue("(iiiii)", ROLE_LENGTH, ROLE_CODING, ROLE_CONNECTION, ROLE_VIA, ROLE_HOP);
    if (numbers == NULL || PyModule_AddObject(m, "RESPONSE_ROLES", numbers) < 0) {
        Py_XDECREF(numbers);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
