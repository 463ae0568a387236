package kvbits

/*
#include <kvbits.h>
*/
import "C"

import "fmt"

// Status is a kvb_status: the pinned result code of every fallible call. The Err* constants
// mirror KVB_ERR_*. A Status is itself an error, so it serves as the sentinel for errors.Is:
//
//	if errors.Is(err, kvbits.ErrNotFound) { ... }
type Status int32

// The statuses of kvbits.h (values pinned by the C API).
const (
	OK                    Status = C.KVB_OK
	ErrInvalidArgument    Status = C.KVB_ERR_INVALID_ARGUMENT    // a value is out of its documented range
	ErrNullPointer        Status = C.KVB_ERR_NULL_POINTER        // a required pointer or handle is missing (or closed)
	ErrShapeMismatch      Status = C.KVB_ERR_SHAPE_MISMATCH      // shapes of tensors / plan / model do not agree
	ErrUnsupported        Status = C.KVB_ERR_UNSUPPORTED         // valid, but this build or backend cannot do it
	ErrCorruptData        Status = C.KVB_ERR_CORRUPT_DATA        // a file or buffer fails validation
	ErrVersionUnsupported Status = C.KVB_ERR_VERSION_UNSUPPORTED // needs a newer format version or unknown feature
	ErrIO                 Status = C.KVB_ERR_IO                  // open/read/write failed
	ErrOutOfMemory        Status = C.KVB_ERR_OUT_OF_MEMORY       // an allocation failed or a size is absurd
	ErrCapacityExhausted  Status = C.KVB_ERR_CAPACITY_EXHAUSTED  // the page pool or sequence table is full
	ErrNotFound           Status = C.KVB_ERR_NOT_FOUND           // unknown (e.g. removed) sequence
	ErrInternal           Status = C.KVB_ERR_INTERNAL            // a bug in kvbits
	ErrDevice             Status = C.KVB_ERR_DEVICE              // the CUDA runtime reported an error
)

// String returns the library's lower-case name of the status ("corrupt_data").
func (s Status) String() string { return C.GoString(C.kvb_status_string(C.kvb_status(s))) }

// Error makes a Status usable as a sentinel error.
func (s Status) Error() string { return "kvbits: " + s.String() }

// Error is what every failing call returns: the status, the library's message for this very
// call, and the Go operation that failed.
type Error struct {
	Op      string // the Go method or function, e.g. "Cache.Append"
	Status  Status
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("kvbits: %s: %s: %s", e.Op, e.Status.String(), e.Message)
}

// Is reports whether target is the same status (a Status sentinel or another *Error).
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case Status:
		return e.Status == t
	case *Error:
		return t != nil && e.Status == t.Status
	}
	return false
}

// newError builds a Go-side error (an argument refused before the library is called).
func newError(op string, status Status, format string, args ...interface{}) error {
	return &Error{Op: op, Status: status, Message: fmt.Sprintf(format, args...)}
}

// closedError is what any call on a closed (or nil) handle returns.
func closedError(op, handle string) error {
	return newError(op, ErrNullPointer, "the %s is closed (or nil)", handle)
}

// errBuf returns a kvb_error for one call. It lives in Go memory (it holds no Go pointers, so
// cgo may pass it) and is private to the call, so the message can never be another call's.
func errBuf() *C.kvb_error {
	e := new(C.kvb_error)
	e.struct_size = C.sizeof_kvb_error
	return e
}

// toError turns a call's status and its kvb_error into nil or an *Error.
func toError(op string, status C.kvb_status, e *C.kvb_error) error {
	if status == C.KVB_OK {
		return nil
	}
	msg := C.GoString(&e.message[0])
	if msg == "" {
		msg = Status(status).String()
	}
	return &Error{Op: op, Status: Status(status), Message: msg}
}
