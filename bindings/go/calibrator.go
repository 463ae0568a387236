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

// ModelShape is the attention shape of a model (kvb_model_shape). Start from
// DefaultModelShape (split-half RoPE, theta 10000) and set the sizes.
type ModelShape struct {
	NLayers    uint32     // 1..4096
	NQHeads    uint32     // 1..65536, a multiple of NKVHeads (GQA)
	NKVHeads   uint32     // 1..4096
	HeadDim    uint32     // even, 2..1024
	RotaryDim  uint32     // even, 2..HeadDim; 0 = HeadDim
	RopeLayout RopeLayout // default RopeSplitHalf
	RopeTheta  float64    // finite, > 1; default 10000
}

// DefaultModelShape returns kvb_model_shape_default's values (sizes zero).
func DefaultModelShape() ModelShape {
	var s C.kvb_model_shape
	C.kvb_model_shape_default(&s)
	return ModelShape{RotaryDim: uint32(s.rotary_dim), RopeLayout: RopeLayout(s.rope_layout),
		RopeTheta: float64(s.rope_theta)}
}

func (m ModelShape) toC() C.kvb_model_shape {
	var s C.kvb_model_shape
	C.kvb_model_shape_default(&s)
	s.n_layers, s.n_q_heads, s.n_kv_heads = C.uint32_t(m.NLayers), C.uint32_t(m.NQHeads), C.uint32_t(m.NKVHeads)
	s.head_dim, s.rotary_dim = C.uint32_t(m.HeadDim), C.uint32_t(m.RotaryDim)
	s.rope_layout = C.int32_t(m.RopeLayout)
	s.rope_theta = C.double(m.RopeTheta)
	return s
}

// PlanOptions are the knobs of Calibrator.BuildPlan (kvb_plan_options). Start from
// DefaultPlanOptions (Block-GTQ, 3 key bits on average, 3 value bits).
type PlanOptions struct {
	Method              Method
	KAvgBits            float64 // average key code bits per dim, in [KMinBits, KMaxBits]
	KMinBits, KMaxBits  int32   // 1..8
	VBits               int32   // 1..8
	Score               Score
	Codebooks           Codebooks
	SinkTokens          uint32   // first tokens of every sequence kept in fp16
	WindowTokens        uint32   // last tokens of every sequence kept in fp16
	FP16Layers          []uint32 // layers kept at 16 bits
	RotationSeed        uint64   // base seed of the generated rotations
	Corpus, Date        string   // recorded in the plan ("" = not recorded); Date as given (ISO-8601)
	ModelFingerprintHex string   // "" or 32 hex digits: XXH3-128 of the model file
}

// DefaultPlanOptions returns kvb_plan_options_default's values.
func DefaultPlanOptions() PlanOptions {
	var o C.kvb_plan_options
	C.kvb_plan_options_default(&o)
	return PlanOptions{
		Method: Method(o.method), KAvgBits: float64(o.k_avg_bits),
		KMinBits: int32(o.k_min_bits), KMaxBits: int32(o.k_max_bits), VBits: int32(o.v_bits),
		Score: Score(o.score), Codebooks: Codebooks(o.codebooks),
		SinkTokens: uint32(o.sink_tokens), WindowTokens: uint32(o.window_tokens),
		RotationSeed: uint64(o.rotation_seed),
	}
}

// cPlanOptions is a kvb_plan_options whose pointers lead to C memory (cgo forbids Go pointers
// inside memory passed to C); free releases them.
type cPlanOptions struct {
	opts  C.kvb_plan_options
	alloc []unsafe.Pointer
}

func (o *PlanOptions) toC() *cPlanOptions {
	c := &cPlanOptions{}
	C.kvb_plan_options_default(&c.opts)
	if o == nil {
		return c
	}
	p := &c.opts
	p.method, p.k_avg_bits = C.int32_t(o.Method), C.double(o.KAvgBits)
	p.k_min_bits, p.k_max_bits, p.v_bits = C.int32_t(o.KMinBits), C.int32_t(o.KMaxBits), C.int32_t(o.VBits)
	p.score, p.codebooks = C.int32_t(o.Score), C.int32_t(o.Codebooks)
	p.sink_tokens, p.window_tokens = C.uint32_t(o.SinkTokens), C.uint32_t(o.WindowTokens)
	p.rotation_seed = C.uint64_t(o.RotationSeed)
	if n := len(o.FP16Layers); n > 0 {
		layers := (*C.uint32_t)(C.malloc(C.size_t(n) * C.sizeof_uint32_t))
		copy(unsafe.Slice((*uint32)(unsafe.Pointer(layers)), n), o.FP16Layers)
		c.alloc = append(c.alloc, unsafe.Pointer(layers))
		p.n_fp16_layers, p.fp16_layers = C.uint32_t(n), layers
	}
	p.corpus = c.cstring(o.Corpus)
	p.date = c.cstring(o.Date)
	p.model_fingerprint_hex = c.cstring(o.ModelFingerprintHex)
	return c
}

func (c *cPlanOptions) cstring(s string) *C.char {
	if s == "" {
		return nil
	}
	p := C.CString(s)
	c.alloc = append(c.alloc, unsafe.Pointer(p))
	return p
}

func (c *cPlanOptions) free() {
	for _, p := range c.alloc {
		C.free(p)
	}
	c.alloc = nil
}

// Calibrator accumulates per-RoPE-block energies of query and key activations, then allocates
// bits per (layer, KV head) and builds a plan. Its calls are serialised by a mutex.
type Calibrator struct {
	mu    sync.Mutex
	ptr   *C.kvb_calibrator
	shape ModelShape
}

// NewCalibrator creates an empty calibrator for a model shape on a context.
func NewCalibrator(ctx *Context, shape ModelShape) (*Calibrator, error) {
	const op = "NewCalibrator"
	cp, err := ctx.acquire(op)
	if err != nil {
		return nil, err
	}
	defer ctx.mu.RUnlock()
	s := shape.toC()
	e := errBuf()
	var ptr *C.kvb_calibrator
	if err := toError(op, C.kvb_calibrator_create(cp, &s, &ptr, e), e); err != nil {
		return nil, err
	}
	if shape.RotaryDim == 0 {
		shape.RotaryDim = shape.HeadDim
	}
	c := &Calibrator{ptr: ptr, shape: shape}
	runtime.SetFinalizer(c, (*Calibrator).Close)
	return c, nil
}

// Close frees the calibrator. Closing twice is a no-op.
func (c *Calibrator) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.kvb_calibrator_destroy(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// acquire locks c for one call; the caller unlocks c.mu.
func (c *Calibrator) acquire(op string) (*C.kvb_calibrator, error) {
	if c == nil {
		return nil, closedError(op, "calibrator")
	}
	c.mu.Lock()
	if c.ptr == nil {
		c.mu.Unlock()
		return nil, closedError(op, "calibrator")
	}
	return c.ptr, nil
}

// Shape returns the model shape the calibrator was created for (RotaryDim resolved).
func (c *Calibrator) Shape() ModelShape {
	if c == nil {
		return ModelShape{}
	}
	return c.shape
}

// Observe accumulates one chunk of one layer in fp32: q [n_tokens, n_q_heads, head_dim] and
// k [n_tokens, n_kv_heads, head_dim]. Either may be empty to observe only the other side.
func (c *Calibrator) Observe(layer uint32, q, k []float32) error {
	return c.observe("Calibrator.Observe", layer, tensorOf(q), tensorOf(k), F32)
}

// ObserveHalf is Observe for fp16 or bf16 bit patterns (dtype F16 or BF16).
func (c *Calibrator) ObserveHalf(layer uint32, q, k []uint16, dtype DType) error {
	const op = "Calibrator.ObserveHalf"
	if err := checkHalf(op, dtype); err != nil {
		return err
	}
	return c.observe(op, layer, tensorOf(q), tensorOf(k), dtype)
}

func (c *Calibrator) observe(op string, layer uint32, q, k tensor, dtype DType) error {
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	qRow := uint64(c.shape.NQHeads) * uint64(c.shape.HeadDim)
	kRow := uint64(c.shape.NKVHeads) * uint64(c.shape.HeadDim)
	var nTokens uint64
	switch {
	case q.n == 0 && k.n == 0:
		return newError(op, ErrNullPointer, "q and k are both empty (give at least one)")
	case q.n > 0:
		if err := checkRows(op, "q", q.n, qRow, "n_q_heads * head_dim"); err != nil {
			return err
		}
		nTokens = q.n / qRow
		if k.n > 0 {
			if err := checkLen(op, "k", k.n, product(nTokens, kRow), "the tokens of q times n_kv_heads * head_dim"); err != nil {
				return err
			}
		}
	default:
		if err := checkRows(op, "k", k.n, kRow, "n_kv_heads * head_dim"); err != nil {
			return err
		}
		nTokens = k.n / kRow
	}
	e := errBuf()
	st := C.kvb_calibrator_observe(ptr, C.uint32_t(layer), q.ptr, k.ptr, C.size_t(nTokens), C.kvb_dtype(dtype), e)
	return toError(op, st, e)
}

// BuildPlan allocates bits from everything observed so far and builds a validated plan;
// options nil means the defaults. The calibrator is unchanged and may observe more.
func (c *Calibrator) BuildPlan(options *PlanOptions) (*Plan, error) {
	const op = "Calibrator.BuildPlan"
	ptr, err := c.acquire(op)
	if err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	o := options.toC()
	defer o.free()
	e := errBuf()
	var plan *C.kvb_plan
	if err := toError(op, C.kvb_calibrator_build_plan(ptr, &o.opts, &plan, e), e); err != nil {
		return nil, err
	}
	return wrapPlan(plan), nil
}
