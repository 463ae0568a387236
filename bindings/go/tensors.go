package kvbits

import (
	"math"
	"math/bits"
	"unsafe"
)

// tensor is a slice seen as a C pointer and an element count; ptr is nil for an empty slice.
// The pointer leads into the slice's backing array, which holds no Go pointers, as cgo requires.
type tensor struct {
	ptr unsafe.Pointer
	n   uint64
}

func tensorOf[T float32 | uint16](s []T) tensor {
	if len(s) == 0 {
		return tensor{}
	}
	return tensor{ptr: unsafe.Pointer(&s[0]), n: uint64(len(s))}
}

// orDummy gives empty tensors a valid non-NULL pointer: the library refuses NULL even where it
// reads nothing (an append of zero tokens).
func (t tensor) orDummy() tensor {
	if t.ptr == nil {
		t.ptr = unsafe.Pointer(&dummyElement)
	}
	return t
}

var dummyElement float32

// checkLen refuses a slice whose length is not the one the shapes imply.
func checkLen(op, name string, have, want uint64, why string) error {
	if have != want {
		return newError(op, ErrShapeMismatch, "%s has %d values, want %d (%s)", name, have, want, why)
	}
	return nil
}

// checkRows refuses a slice that is not a whole, non-zero number of rows of row values.
func checkRows(op, name string, have, row uint64, rowName string) error {
	if have == 0 || have%row != 0 {
		return newError(op, ErrShapeMismatch, "%s has %d values, not a whole number of tokens of %s = %d values",
			name, have, rowName, row)
	}
	return nil
}

// checkHalf refuses a dtype that does not describe []uint16 data.
func checkHalf(op string, dtype DType) error {
	if dtype != F16 && dtype != BF16 {
		return newError(op, ErrInvalidArgument, "[]uint16 data needs dtype F16 or BF16, got %s (%d)", dtype.String(), int32(dtype))
	}
	return nil
}

// sumTokens adds per-sequence token counts without overflow.
func sumTokens(n []uint32) uint64 {
	var s uint64
	for _, x := range n {
		s += uint64(x)
	}
	return s
}

// product multiplies two counts, saturating at MaxUint64 (no slice is that long, so a
// saturated length always mismatches).
func product(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}
