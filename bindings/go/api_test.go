package kvbits

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var major, minor, patch uint32
	if _, err := fmt.Sscanf(Version(), "%d.%d.%d", &major, &minor, &patch); err != nil {
		t.Fatalf("Version() = %q: %v", Version(), err)
	}
	if got := major*10000 + minor*100 + patch; got != VersionNumber() {
		t.Errorf("Version() %q gives %d, VersionNumber() %d", Version(), got, VersionNumber())
	}
	if VersionNumber() != HeaderVersionNumber {
		t.Errorf("loaded library %d, header %d", VersionNumber(), HeaderVersionNumber)
	}
}

func TestStatusNames(t *testing.T) {
	// Pinned by the C API: values and names never change.
	want := []struct {
		s    Status
		v    int32
		name string
	}{
		{OK, 0, "ok"}, {ErrInvalidArgument, 1, "invalid_argument"}, {ErrNullPointer, 2, "null_pointer"},
		{ErrShapeMismatch, 3, "shape_mismatch"}, {ErrUnsupported, 4, "unsupported"},
		{ErrCorruptData, 5, "corrupt_data"}, {ErrVersionUnsupported, 6, "version_unsupported"},
		{ErrIO, 7, "io_error"}, {ErrOutOfMemory, 8, "out_of_memory"}, {ErrCapacityExhausted, 9, "capacity_exhausted"},
		{ErrNotFound, 10, "not_found"}, {ErrInternal, 11, "internal"}, {ErrDevice, 12, "device_error"},
		{Status(13), 13, "unknown_status"}, {Status(-1), -1, "unknown_status"},
	}
	for _, w := range want {
		if int32(w.s) != w.v || w.s.String() != w.name {
			t.Errorf("status %d: value %d name %q, want %d %q", w.v, int32(w.s), w.s.String(), w.v, w.name)
		}
	}
	if ErrNotFound.Error() != "kvbits: not_found" {
		t.Errorf("ErrNotFound.Error() = %q", ErrNotFound.Error())
	}
}

func TestErrorCarriesStatusAndMessage(t *testing.T) {
	ctx := newTestContext(t)
	cache := newTestCache(t, ctx, calibratedPlan(t, ctx, testShape(), nil), nil)
	err := cache.RemoveSequence(42)
	wantStatus(t, "remove unknown sequence", err, ErrNotFound)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatal("not an *Error")
	}
	if e.Op != "Cache.RemoveSequence" || !strings.Contains(e.Message, "42") {
		t.Errorf("op %q message %q: want the op and the sequence id", e.Op, e.Message)
	}
	if want := "kvbits: Cache.RemoveSequence: not_found: " + e.Message; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	if errors.Is(err, ErrInvalidArgument) || !errors.Is(err, &Error{Status: ErrNotFound}) {
		t.Error("errors.Is must compare statuses")
	}
	wrapped := fmt.Errorf("serving request 7: %w", err)
	if !errors.Is(wrapped, ErrNotFound) {
		t.Error("errors.Is must see through wrapping")
	}
	// The context keeps the last failure's text too.
	if got := ctx.LastError(); got != e.Message {
		t.Errorf("LastError() = %q, want %q", got, e.Message)
	}
}

func TestContext(t *testing.T) {
	ctx := newTestContext(t)
	b, dev, err := ctx.Backend()
	if err != nil || b != BackendCPU || dev != 0 {
		t.Errorf("Backend() = %v %d %v, want cpu 0", b, dev, err)
	}
	if got := ctx.LastError(); got != "" {
		t.Errorf("fresh context LastError() = %q", got)
	}
	d := DefaultContextParams()
	if d.Backend != BackendAuto || d.Device != 0 || d.NThreads != 0 {
		t.Errorf("DefaultContextParams() = %+v", d)
	}
	for _, c := range []struct {
		name string
		p    ContextParams
	}{
		{"n_threads 1025", ContextParams{Backend: BackendCPU, NThreads: 1025}},
		{"backend 7", ContextParams{Backend: 7}},
		{"device -1", ContextParams{Backend: BackendCPU, Device: -1}},
	} {
		got, err := NewContext(&c.p)
		wantStatus(t, c.name, err, ErrInvalidArgument)
		if got != nil {
			t.Errorf("%s: a context came back with the error", c.name)
		}
	}
	// This build may have no CUDA at all (ErrUnsupported) or no device (ErrUnsupported or
	// ErrDevice); where it does, the context reports it, and caches say what they lack.
	cuda, err := NewContext(&ContextParams{Backend: BackendCUDA})
	if err != nil {
		var e *Error
		if !errors.As(err, &e) || (e.Status != ErrUnsupported && e.Status != ErrDevice) {
			t.Errorf("CUDA context: %v, want unsupported or device", err)
		}
	} else {
		defer cuda.Close()
		if b, _, err := cuda.Backend(); err != nil || b != BackendCUDA {
			t.Errorf("CUDA context Backend() = %v, %v", b, err)
		}
	}
}
