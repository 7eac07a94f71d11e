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

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(raw, roles, keep_below) -> (start_line, kept, special): a validated head's lines by role."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wakeproxy.http._fieldscan",
    "The field lines of a validated HTTP head sorted by role (the C twin of wire._scan_fields).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fieldscan(void)
{
    return PyModule_Create(&module);
}
