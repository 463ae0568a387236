package kvbits

/*
#include <kvbits.h>
*/
import "C"

// DType is the element type of an input tensor (kvb_dtype). Outputs are always float32.
type DType int32

const (
	F32  DType = C.KVB_DTYPE_F32
	F16  DType = C.KVB_DTYPE_F16  // IEEE half, passed as []uint16 bit patterns
	BF16 DType = C.KVB_DTYPE_BF16 // bfloat16, passed as []uint16 bit patterns
)

func (t DType) String() string {
	switch t {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return "unknown_dtype"
}

// Backend selects what a context runs on (kvb_backend).
type Backend int32

const (
	BackendCPU  Backend = C.KVB_BACKEND_CPU  // the CPU reference backend
	BackendCUDA Backend = C.KVB_BACKEND_CUDA // one CUDA device
	BackendAuto Backend = C.KVB_BACKEND_AUTO // CUDA if this build and machine have a device, else CPU
)

func (b Backend) String() string {
	switch b {
	case BackendCPU:
		return "cpu"
	case BackendCUDA:
		return "cuda"
	case BackendAuto:
		return "auto"
	}
	return "unknown_backend"
}

// RopeLayout is how a model pairs dimensions under RoPE (kvb_rope_layout).
type RopeLayout int32

const (
	RopeSplitHalf   RopeLayout = C.KVB_ROPE_SPLIT_HALF  // Hugging Face: dims (i, i + D/2)
	RopeInterleaved RopeLayout = C.KVB_ROPE_INTERLEAVED // llama2.c, GPT-J: dims (2i, 2i + 1)
)

// Method is how a plan allocates key bits (kvb_method).
type Method int32

const (
	MethodBlockGTQ     Method = C.KVB_METHOD_BLOCK_GTQ      // RoPE-aware bits per frequency block
	MethodUniformTQMSE Method = C.KVB_METHOD_UNIFORM_TQ_MSE // the same bits for every block
)

// Score is how the calibrator scores a RoPE block from its mean energies Eq, Ek (kvb_score).
type Score int32

const (
	ScoreEnergy  Score = C.KVB_SCORE_ENERGY  // (Eq + Ek) / 2
	ScoreProduct Score = C.KVB_SCORE_PRODUCT // Eq * Ek
)

// Codebooks selects the scalar codebooks of a plan (kvb_codebooks).
type Codebooks int32

const (
	CodebooksLloydMax  Codebooks = C.KVB_CODEBOOKS_LLOYD_MAX
	CodebooksReference Codebooks = C.KVB_CODEBOOKS_REFERENCE
)
