package kvbits

/*
#include <stdlib.h>
#include <kvbits.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// ContextParams configures a context (kvb_context_params). The zero value is not the default:
// start from DefaultContextParams, or pass nil to NewContext.
type ContextParams struct {
	Backend  Backend // default BackendAuto
	Device   int32   // CUDA device ordinal, >= 0; default 0
	NThreads uint32  // CPU worker threads, 0..1024; 0 = hardware concurrency
}

// DefaultContextParams returns the library's defaults (kvb_context_params_default).
func DefaultContextParams() ContextParams {
	var p C.kvb_context_params
	C.kvb_context_params_default(&p)
	return ContextParams{Backend: Backend(p.backend), Device: int32(p.device), NThreads: uint32(p.n_threads)}
}

// Context is one backend: the CPU reference with its worker threads, or one CUDA device. It is
// safe for concurrent use; work from several goroutines takes turns on its worker pool.
type Context struct {
	mu  sync.RWMutex // read-held by calls, write-held by Close
	ptr *C.kvb_context
}

// NewContext creates a context; params nil means all defaults.
func NewContext(params *ContextParams) (*Context, error) {
	var p C.kvb_context_params
	C.kvb_context_params_default(&p)
	if params != nil {
		p.backend = C.kvb_backend(params.Backend)
		p.device = C.int32_t(params.Device)
		p.n_threads = C.uint32_t(params.NThreads)
	}
	e := errBuf()
	var ptr *C.kvb_context
	if err := toError("NewContext", C.kvb_context_create(&p, &ptr, e), e); err != nil {
		return nil, err
	}
	c := &Context{ptr: ptr}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// Close drops this handle's reference; caches and calibrators made from the context keep it
// alive. Closing twice is a no-op.
func (c *Context) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.kvb_context_destroy(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// acquire read-locks c for one call and returns its pointer, or an error if c is closed. The
// caller must call c.mu.RUnlock (which also keeps c reachable until the call is over, so the
// finalizer cannot free it underneath).
func (c *Context) acquire(op string) (*C.kvb_context, error) {
	if c == nil {
		return nil, closedError(op, "context")
	}
	c.mu.RLock()
	if c.ptr == nil {
		c.mu.RUnlock()
		return nil, closedError(op, "context")
	}
	return c.ptr, nil
}

// Backend returns the backend the context runs on (never BackendAuto) and its device ordinal
// (0 for the CPU).
func (c *Context) Backend() (Backend, int32, error) {
	const op = "Context.Backend"
	ptr, err := c.acquire(op)
	if err != nil {
		return 0, 0, err
	}
	defer c.mu.RUnlock()
	var b C.kvb_backend
	var dev C.int32_t
	e := errBuf()
	if err := toError(op, C.kvb_context_backend(ptr, &b, &dev, e), e); err != nil {
		return 0, 0, err
	}
	return Backend(b), int32(dev), nil
}

// LastError returns the message of the most recent failed call made with this context or with
// a cache or calibrator created from it ("" if none). With several goroutines another one's
// failure may have replaced it: the error a call returns is the exact one.
func (c *Context) LastError() string {
	ptr, err := c.acquire("Context.LastError")
	if err != nil {
		return ""
	}
	defer c.mu.RUnlock()
	n := C.kvb_context_last_error(ptr, nil, 0)
	if n == 0 {
		return ""
	}
	buf := (*C.char)(C.malloc(n + 1))
	defer C.free(unsafe.Pointer(buf))
	got := C.kvb_context_last_error(ptr, buf, n+1)
	if got > n { // replaced by a longer message in between: return what fitted
		got = n
	}
	return C.GoStringN(buf, C.int(got))
}

// PlanSupported tells whether caches of plan can be created and attended on this context;
// ErrUnsupported says what is missing. kvbits never falls back to a slower path silently.
func (c *Context) PlanSupported(plan *Plan) error {
	const op = "Context.PlanSupported"
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.RUnlock()
	pp, err := plan.acquire(op)
	if err != nil {
		return err
	}
	defer plan.mu.RUnlock()
	e := errBuf()
	return toError(op, C.kvb_plan_supported(ptr, pp, e), e)
}
