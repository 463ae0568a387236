// Package kvbits is the Go binding of kvbits, a low-bit (2-4 bits per value) KV-cache library
// for LLM inference: a bit plan calibrated once per model, a paged cache that stores keys and
// values packed, and attention computed on the packed cache.
//
// The binding wraps the C API (kvbits.h, found through pkg-config) one to one:
//
//	ctx, err := kvbits.NewContext(&kvbits.ContextParams{Backend: kvbits.BackendCPU})
//	plan, err := kvbits.LoadPlanFile("model.kvbplan")
//	params := kvbits.DefaultCacheParams()
//	params.MaxPages = 1024
//	cache, err := kvbits.NewCache(ctx, plan, params)
//	defer cache.Close()
//	seq, err := cache.AddSequence()
//	err = cache.Append(layer, []uint64{seq}, []uint32{n}, k, v)     // [n, n_kv_heads, head_dim]
//	err = cache.Decode(layer, []uint64{seq}, q, out, lse, nil)       // [1, n_q_heads, head_dim]
//
// Errors are *Error values carrying the library's status and message, taken from the same cgo
// call that failed (never from thread-local state: goroutines move between OS threads).
// errors.Is(err, kvbits.ErrNotFound) tests the status.
//
// Handles (Context, Plan, Calibrator, Cache) own C memory: call Close when done. A finalizer
// closes forgotten handles, but only as a backstop, since the Go collector does not see the C
// memory behind them. Handles may be closed in any order; a cache keeps its context and plan
// alive inside the library. Using a closed handle returns an error with ErrNullPointer.
//
// Concurrency: Context and Plan may be shared by any number of goroutines. A Cache or a
// Calibrator serialises its own calls with a mutex, so sharing one is safe but gives no
// parallelism: give each goroutine its own cache (and, for throughput, its own context).
package kvbits

/*
#cgo pkg-config: kvbits
#include <kvbits.h>
*/
import "C"

// HeaderVersionNumber is the version of the kvbits.h this package was compiled against
// (MAJOR*10000 + MINOR*100 + PATCH). VersionNumber reports the library actually loaded.
const HeaderVersionNumber = uint32(C.KVB_VERSION_NUMBER)

// VersionNumber returns the loaded library's version, MAJOR*10000 + MINOR*100 + PATCH.
func VersionNumber() uint32 { return uint32(C.kvb_version_number()) }

// Version returns the loaded library's version as text, e.g. "0.1.0".
func Version() string { return C.GoString(C.kvb_version_string()) }
