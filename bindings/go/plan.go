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

// Plan is a bit plan: the per-(layer, KV head) bit allocation, codebooks and rotations of one
// model. Plans are immutable; share one freely between goroutines, contexts and caches.
type Plan struct {
	mu  sync.RWMutex // read-held by calls, write-held by Close
	ptr *C.kvb_plan
}

func wrapPlan(ptr *C.kvb_plan) *Plan {
	p := &Plan{ptr: ptr}
	runtime.SetFinalizer(p, (*Plan).Close)
	return p
}

// LoadPlanFile loads and fully validates a plan file.
func LoadPlanFile(path string) (*Plan, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	e := errBuf()
	var ptr *C.kvb_plan
	if err := toError("LoadPlanFile", C.kvb_plan_load_file(cpath, &ptr, e), e); err != nil {
		return nil, err
	}
	return wrapPlan(ptr), nil
}

// LoadPlanBytes loads and fully validates a plan from its serialised bytes (not retained).
func LoadPlanBytes(data []byte) (*Plan, error) {
	var empty [1]byte // the library wants a non-NULL pointer even for zero bytes
	src := unsafe.Pointer(&empty[0])
	if len(data) > 0 {
		src = unsafe.Pointer(&data[0])
	}
	e := errBuf()
	var ptr *C.kvb_plan
	if err := toError("LoadPlanBytes", C.kvb_plan_load_memory(src, C.size_t(len(data)), &ptr, e), e); err != nil {
		return nil, err
	}
	return wrapPlan(ptr), nil
}

// Close drops this handle's reference; caches built on the plan keep their own. Closing twice
// is a no-op.
func (p *Plan) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ptr != nil {
		C.kvb_plan_destroy(p.ptr)
		p.ptr = nil
		runtime.SetFinalizer(p, nil)
	}
	return nil
}

// acquire read-locks p for one call (see Context.acquire).
func (p *Plan) acquire(op string) (*C.kvb_plan, error) {
	if p == nil {
		return nil, closedError(op, "plan")
	}
	p.mu.RLock()
	if p.ptr == nil {
		p.mu.RUnlock()
		return nil, closedError(op, "plan")
	}
	return p.ptr, nil
}

// Save writes the plan atomically (temporary file + rename); on failure a previous file at
// path is intact. The same plan always gives the same bytes.
func (p *Plan) Save(path string) error {
	const op = "Plan.Save"
	ptr, err := p.acquire(op)
	if err != nil {
		return err
	}
	defer p.mu.RUnlock()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	e := errBuf()
	return toError(op, C.kvb_plan_save_file(ptr, cpath, e), e)
}

// Bytes serialises the plan: the exact bytes Save writes.
func (p *Plan) Bytes() ([]byte, error) {
	const op = "Plan.Bytes"
	ptr, err := p.acquire(op)
	if err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	var size C.size_t
	e := errBuf()
	if err := toError(op, C.kvb_plan_serialize(ptr, nil, 0, &size, e), e); err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, newError(op, ErrInternal, "the library reported a plan of 0 bytes")
	}
	buf := make([]byte, int(size))
	if err := toError(op, C.kvb_plan_serialize(ptr, unsafe.Pointer(&buf[0]), size, &size, e), e); err != nil {
		return nil, err
	}
	return buf, nil
}

// PlanInfo summarises a plan (kvb_plan_info).
type PlanInfo struct {
	NLayers, NQHeads, NKVHeads, HeadDim, RotaryDim uint32
	RopeLayout                                     RopeLayout
	RopeTheta                                      float64
	Method                                         Method
	KAvgBits                                       float64 // requested average key code bits per dim
	VBits                                          uint32  // value bits of the first quantised head
	SinkTokens, WindowTokens                       uint32
	NFP16Layers                                    uint32
	BytesPerTokenPerHead                           float64 // packed, scales included, averaged
	BytesPerTokenTotal                             uint64  // all layers and KV heads
	CalibTokens                                    uint64
}

// Info returns the plan's summary.
func (p *Plan) Info() (PlanInfo, error) {
	const op = "Plan.Info"
	ptr, err := p.acquire(op)
	if err != nil {
		return PlanInfo{}, err
	}
	defer p.mu.RUnlock()
	return planInfo(op, ptr)
}

// planInfo reads a plan's info; the caller holds the plan.
func planInfo(op string, ptr *C.kvb_plan) (PlanInfo, error) {
	var in C.kvb_plan_info
	in.struct_size = C.sizeof_kvb_plan_info
	e := errBuf()
	if err := toError(op, C.kvb_plan_get_info(ptr, &in, e), e); err != nil {
		return PlanInfo{}, err
	}
	return PlanInfo{
		NLayers: uint32(in.n_layers), NQHeads: uint32(in.n_q_heads), NKVHeads: uint32(in.n_kv_heads),
		HeadDim: uint32(in.head_dim), RotaryDim: uint32(in.rotary_dim),
		RopeLayout: RopeLayout(in.rope_layout), RopeTheta: float64(in.rope_theta),
		Method: Method(in.method), KAvgBits: float64(in.k_avg_bits), VBits: uint32(in.v_bits),
		SinkTokens: uint32(in.sink_tokens), WindowTokens: uint32(in.window_tokens),
		NFP16Layers:          uint32(in.n_fp16_layers),
		BytesPerTokenPerHead: float64(in.bytes_per_token_per_head),
		BytesPerTokenTotal:   uint64(in.bytes_per_token_total),
		CalibTokens:          uint64(in.calib_tokens),
	}, nil
}

// BytesPerToken returns the packed bytes per token of one (layer, KV head).
func (p *Plan) BytesPerToken(layer, kvHead uint32) (uint64, error) {
	const op = "Plan.BytesPerToken"
	ptr, err := p.acquire(op)
	if err != nil {
		return 0, err
	}
	defer p.mu.RUnlock()
	var n C.uint64_t
	e := errBuf()
	if err := toError(op, C.kvb_plan_bytes_per_token(ptr, C.uint32_t(layer), C.uint32_t(kvHead), &n, e), e); err != nil {
		return 0, err
	}
	return uint64(n), nil
}

// CheckShape returns nil if the plan was made for this model shape, else ErrShapeMismatch
// naming the field.
func (p *Plan) CheckShape(nLayers, nQHeads, nKVHeads, headDim uint32) error {
	const op = "Plan.CheckShape"
	ptr, err := p.acquire(op)
	if err != nil {
		return err
	}
	defer p.mu.RUnlock()
	e := errBuf()
	st := C.kvb_plan_check_shape(ptr, C.uint32_t(nLayers), C.uint32_t(nQHeads), C.uint32_t(nKVHeads),
		C.uint32_t(headDim), e)
	return toError(op, st, e)
}

// CheckModel is CheckShape for every field of a model shape (rotary dim, RoPE layout and theta
// included). An invalid shape gives ErrInvalidArgument.
func (p *Plan) CheckModel(model ModelShape) error {
	const op = "Plan.CheckModel"
	ptr, err := p.acquire(op)
	if err != nil {
		return err
	}
	defer p.mu.RUnlock()
	m := model.toC()
	e := errBuf()
	return toError(op, C.kvb_plan_check_model(ptr, &m, e), e)
}
