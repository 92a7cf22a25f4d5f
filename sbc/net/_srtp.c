/* Optional native packet path for srtp.py: libsrtp called straight from C.
 *
 * The SRTP itself is libsrtp's, the copy pylibsrtp ships: bind() is given
 * the addresses of its srtp_protect, srtp_unprotect, srtp_protect_rtcp and
 * srtp_unprotect_rtcp (taken from pylibsrtp's cffi library, whose version
 * is pinned), and a Transform the addresses of two srtp_t contexts that
 * pylibsrtp Sessions own (srtp.py keeps those Sessions for as long as the
 * Transform lives). What this saves per packet is the interpreter's work
 * around the call: a Python frame, two slices of a cffi buffer, a length
 * cell and three argument conversions.
 *
 * Each method copies the packet into a buffer on the stack (libsrtp works
 * in place and appends its tag), calls libsrtp and returns the result as
 * new bytes, or None when the packet is refused: that is counted in the
 * Transform's counters, which srtp.py's metrics read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* libsrtp 2's signature: srtp_err_status_t f(srtp_t ctx, void *hdr, int *len). */
typedef int (*srtp_fn)(void *ctx, void *hdr, int *len);

enum { PROTECT, UNPROTECT, PROTECT_RTCP, UNPROTECT_RTCP };
static srtp_fn fns[4];

#define BUFFER 1500                         /* the largest packet, as srtp.py has it */
#define RTP_ROOM (BUFFER - (16 + 128))      /* room for the largest trailer (tag, MKI) */
#define RTCP_ROOM (BUFFER - (4 + 16 + 128)) /* ... and the SRTCP index before it */
#define AUTH_FAIL 7                         /* srtp_err_status_auth_fail */
#define REPLAY_FAIL 9                       /* srtp_err_status_replay_fail */
#define REPLAY_OLD 10                       /* srtp_err_status_replay_old */

typedef struct {
    PyObject_HEAD
    void *in;   /* srtp_t with the peer's key: unprotect */
    void *out;  /* srtp_t with ours: protect */
    Py_ssize_t auth_failures, replays, malformed, protect_failures;
} Transform;

static int
transform_init(Transform *self, PyObject *args, PyObject *kwds)
{
    unsigned long long in, out;
    if (!PyArg_ParseTuple(args, "KK:Transform", &in, &out))
        return -1;
    if (!fns[PROTECT]) {
        PyErr_SetString(PyExc_RuntimeError, "_srtp.bind() was not called");
        return -1;
    }
    if (!in || !out) {
        PyErr_SetString(PyExc_ValueError, "null srtp_t");
        return -1;
    }
    self->in = (void *)(uintptr_t)in;
    self->out = (void *)(uintptr_t)out;
    return 0;
}

/* One packet through libsrtp: room is the largest input, refused ones counted. */
static PyObject *
apply(Transform *self, PyObject *packet, int which, Py_ssize_t room)
{
    unsigned char buf[BUFFER];
    Py_buffer view;
    int len, status;
    int outbound = which == PROTECT || which == PROTECT_RTCP;

    if (!self->in) {  /* made with __new__ alone: no contexts to call libsrtp with */
        PyErr_SetString(PyExc_RuntimeError, "Transform was not initialized");
        return NULL;
    }
    if (PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > room) {
        PyBuffer_Release(&view);
        if (outbound)
            self->protect_failures++;
        else
            self->malformed++;
        Py_RETURN_NONE;
    }
    memcpy(buf, view.buf, view.len);
    len = (int)view.len;
    PyBuffer_Release(&view);
    status = fns[which](outbound ? self->out : self->in, buf, &len);
    if (status) {
        if (outbound)
            self->protect_failures++;
        else if (status == AUTH_FAIL)
            self->auth_failures++;
        else if (status == REPLAY_FAIL || status == REPLAY_OLD)
            self->replays++;
        else
            self->malformed++;
        Py_RETURN_NONE;
    }
    if (len < 0 || len > BUFFER) {  /* libsrtp never does this; never trust it blindly */
        self->malformed++;
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize((const char *)buf, len);
}

static PyObject *
t_unprotect(Transform *self, PyObject *packet)
{
    return apply(self, packet, UNPROTECT, BUFFER);
}

static PyObject *
t_protect(Transform *self, PyObject *packet)
{
    return apply(self, packet, PROTECT, RTP_ROOM);
}

static PyObject *
t_unprotect_rtcp(Transform *self, PyObject *packet)
{
    return apply(self, packet, UNPROTECT_RTCP, BUFFER);
}

static PyObject *
t_protect_rtcp(Transform *self, PyObject *packet)
{
    return apply(self, packet, PROTECT_RTCP, RTCP_ROOM);
}

static PyMethodDef transform_methods[] = {
    {"unprotect", (PyCFunction)t_unprotect, METH_O,
     "SRTP packet from the peer -> RTP packet, or None (dropped and counted)."},
    {"protect", (PyCFunction)t_protect, METH_O,
     "RTP packet towards the peer -> SRTP packet, or None (dropped and counted)."},
    {"unprotect_rtcp", (PyCFunction)t_unprotect_rtcp, METH_O,
     "SRTCP packet from the peer -> RTCP packet, or None (dropped and counted)."},
    {"protect_rtcp", (PyCFunction)t_protect_rtcp, METH_O,
     "RTCP packet towards the peer -> SRTCP packet, or None (dropped and counted)."},
    {NULL}
};

static PyMemberDef transform_members[] = {
    {"auth_failures", T_PYSSIZET, offsetof(Transform, auth_failures), READONLY, NULL},
    {"replays", T_PYSSIZET, offsetof(Transform, replays), READONLY, NULL},
    {"malformed", T_PYSSIZET, offsetof(Transform, malformed), READONLY, NULL},
    {"protect_failures", T_PYSSIZET, offsetof(Transform, protect_failures), READONLY, NULL},
    {NULL}
};

static PyTypeObject TransformType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sbc.net._srtp.Transform",
    .tp_basicsize = sizeof(Transform),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Transform(inbound_srtp_t, outbound_srtp_t): libsrtp's four calls, counted.",
    .tp_methods = transform_methods,
    .tp_members = transform_members,
    .tp_init = (initproc)transform_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *
bind(PyObject *module, PyObject *args)
{
    unsigned long long a[4];
    int i;
    if (!PyArg_ParseTuple(args, "KKKK:bind", &a[0], &a[1], &a[2], &a[3]))
        return NULL;
    for (i = 0; i < 4; i++) {
        if (!a[i]) {
            PyErr_SetString(PyExc_ValueError, "null function address");
            return NULL;
        }
    }
    for (i = 0; i < 4; i++)
        fns[i] = (srtp_fn)(uintptr_t)a[i];
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(protect, unprotect, protect_rtcp, unprotect_rtcp): libsrtp's functions' addresses."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sbc.net._srtp", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__srtp(void)
{
    PyObject *m;
    if (PyType_Ready(&TransformType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&TransformType);
    if (PyModule_AddObject(m, "Transform", (PyObject *)&TransformType) < 0) {
        Py_DECREF(&TransformType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
