package kvbits

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func TestPlanBytesSaveLoad(t *testing.T) {
	ctx := newTestContext(t)
	shape := testShape()
	opts := DefaultPlanOptions()
	opts.Corpus, opts.Date = "synthetic", "2026-01-01T00:00:00Z"
	plan := calibratedPlan(t, ctx, shape, &opts)
	b, err := plan.Bytes()
	must(t, "Bytes", err)
	// The fixed header (docs/plan-format.md): magic, version 1.0, header size, file size.
	if string(b[:8]) != "KVBPLAN\x00" || binary.LittleEndian.Uint16(b[8:]) != 1 ||
		binary.LittleEndian.Uint16(b[10:]) != 0 || binary.LittleEndian.Uint32(b[12:]) != 64 ||
		binary.LittleEndian.Uint64(b[32:]) != uint64(len(b)) {
		t.Fatalf("plan header % x, %d bytes", b[:40], len(b))
	}
	path := filepath.Join(t.TempDir(), "p.kvbplan")
	must(t, "Save", plan.Save(path))
	onDisk, err := os.ReadFile(path)
	must(t, "read back", err)
	if !bytes.Equal(onDisk, b) {
		t.Fatal("Save and Bytes differ")
	}
	fromFile, err := LoadPlanFile(path)
	must(t, "LoadPlanFile", err)
	defer fromFile.Close()
	fromBytes, err := LoadPlanBytes(b)
	must(t, "LoadPlanBytes", err)
	defer fromBytes.Close()
	for _, p := range []*Plan{fromFile, fromBytes} {
		again, err := p.Bytes()
		must(t, "Bytes of a loaded plan", err)
		if !bytes.Equal(again, b) {
			t.Error("a loaded plan serialises to other bytes")
		}
	}
	// The same observations and options give the same bytes (no clock, no randomness).
	other := calibratedPlan(t, ctx, shape, &opts)
	if ob, _ := other.Bytes(); !bytes.Equal(ob, b) {
		t.Error("calibrating twice gave different plans")
	}
}

func TestPlanInfo(t *testing.T) {
	ctx := newTestContext(t)
	shape := testShape()
	opts := DefaultPlanOptions()
	opts.SinkTokens, opts.WindowTokens, opts.FP16Layers = 4, 8, []uint32{1}
	plan := calibratedPlan(t, ctx, shape, &opts)
	info, err := plan.Info()
	must(t, "Info", err)
	want := PlanInfo{NLayers: 2, NQHeads: 4, NKVHeads: 2, HeadDim: 16, RotaryDim: 16, RopeLayout: RopeSplitHalf,
		RopeTheta: 10000, Method: MethodBlockGTQ, KAvgBits: 3, VBits: 3, SinkTokens: 4, WindowTokens: 8,
		NFP16Layers: 1, CalibTokens: 64}
	got := info
	got.BytesPerTokenPerHead, got.BytesPerTokenTotal = 0, 0
	if got != want {
		t.Errorf("Info() = %+v\nwant      %+v", got, want)
	}
	// Per-head byte counts add up to the total, and the mean is the total per head.
	var sum uint64
	for l := uint32(0); l < info.NLayers; l++ {
		for h := uint32(0); h < info.NKVHeads; h++ {
			n, err := plan.BytesPerToken(l, h)
			must(t, "BytesPerToken", err)
			sum += n
		}
	}
	// The fp16 layer: K and V of 16 dims in fp16 = 64 bytes per head.
	if n, _ := plan.BytesPerToken(1, 0); n != 64 {
		t.Errorf("fp16 layer: %d bytes per token per head, want 64", n)
	}
	if sum != info.BytesPerTokenTotal || info.BytesPerTokenPerHead != float64(sum)/4 {
		t.Errorf("sum %d, total %d, per head %g", sum, info.BytesPerTokenTotal, info.BytesPerTokenPerHead)
	}
	_, err = plan.BytesPerToken(2, 0)
	wantStatus(t, "BytesPerToken layer 2", err, ErrInvalidArgument)
	_, err = plan.BytesPerToken(0, 2)
	wantStatus(t, "BytesPerToken head 2", err, ErrInvalidArgument)

	must(t, "CheckShape", plan.CheckShape(2, 4, 2, 16))
	wantStatus(t, "CheckShape other head_dim", plan.CheckShape(2, 4, 2, 32), ErrShapeMismatch)
	must(t, "CheckModel", plan.CheckModel(shape))
	other := shape
	other.RopeTheta = 500000
	wantStatus(t, "CheckModel other theta", plan.CheckModel(other), ErrShapeMismatch)
	other = shape
	other.HeadDim = 15
	wantStatus(t, "CheckModel odd head_dim", plan.CheckModel(other), ErrInvalidArgument)
	must(t, "PlanSupported", ctx.PlanSupported(plan))
}

func TestPlanBadBytes(t *testing.T) {
	ctx := newTestContext(t)
	b, err := calibratedPlan(t, ctx, testShape(), nil).Bytes()
	must(t, "Bytes", err)
	for _, n := range []int{0, 1, 8, 63, 64, 100, len(b) / 2, len(b) - 1} {
		p, err := LoadPlanBytes(b[:n])
		wantStatus(t, "truncated plan", err, ErrCorruptData)
		if p != nil {
			t.Errorf("truncated to %d bytes: a plan came back", n)
		}
	}
	damaged := append([]byte(nil), b...)
	damaged[len(damaged)-5] ^= 0x40
	_, err = LoadPlanBytes(damaged)
	wantStatus(t, "damaged plan", err, ErrCorruptData)
	newer := append([]byte(nil), b...)
	newer[8] = 2 // major version 2, but the header checksum is checked first
	_, err = LoadPlanBytes(newer)
	wantStatus(t, "header edited", err, ErrCorruptData)
	_, err = LoadPlanFile(filepath.Join(t.TempDir(), "missing.kvbplan"))
	wantStatus(t, "missing file", err, ErrIO)
	path := filepath.Join(t.TempDir(), "short.kvbplan")
	must(t, "write", os.WriteFile(path, b[:len(b)-1], 0o644))
	_, err = LoadPlanFile(path)
	wantStatus(t, "truncated file", err, ErrCorruptData)
	plan, err := LoadPlanBytes(b)
	must(t, "LoadPlanBytes", err)
	defer plan.Close()
	wantStatus(t, "save into a missing folder", plan.Save(filepath.Join(t.TempDir(), "no", "p.kvbplan")), ErrIO)
}
