//! The loaded library agrees with the declarations: version, status names, error init.
use kvbits_sys::*;
use std::ffi::CStr;

#[test]
fn loaded_library_version_matches_the_header_constants() {
    let number = unsafe { kvb_version_number() };
    assert_eq!(number, KVB_VERSION_NUMBER);
    assert_eq!(number, KVB_VERSION_MAJOR * 10000 + KVB_VERSION_MINOR * 100 + KVB_VERSION_PATCH);
    let text = unsafe { CStr::from_ptr(kvb_version_string()) }.to_str().unwrap();
    assert_eq!(text, format!("{}.{}.{}", KVB_VERSION_MAJOR, KVB_VERSION_MINOR, KVB_VERSION_PATCH));
}

#[test]
fn status_strings_name_every_status() {
    let expected = [
        (KVB_OK, "ok"),
        (KVB_ERR_INVALID_ARGUMENT, "invalid_argument"),
        (KVB_ERR_NULL_POINTER, "null_pointer"),
        (KVB_ERR_SHAPE_MISMATCH, "shape_mismatch"),
        (KVB_ERR_UNSUPPORTED, "unsupported"),
        (KVB_ERR_CORRUPT_DATA, "corrupt_data"),
        (KVB_ERR_VERSION_UNSUPPORTED, "version_unsupported"),
        (KVB_ERR_IO, "io_error"),
        (KVB_ERR_OUT_OF_MEMORY, "out_of_memory"),
        (KVB_ERR_CAPACITY_EXHAUSTED, "capacity_exhausted"),
        (KVB_ERR_NOT_FOUND, "not_found"),
        (KVB_ERR_INTERNAL, "internal"),
        (KVB_ERR_DEVICE, "device_error"),
        (13, "unknown_status"),
        (-1, "unknown_status"),
    ];
    for (status, name) in expected.iter() {
        let got = unsafe { CStr::from_ptr(kvb_status_string(*status)) }.to_str().unwrap();
        assert_eq!(got, *name, "status {}", status);
    }
}

#[test]
fn error_init_sets_the_size_and_clears_the_rest() {
    let mut err = kvb_error { struct_size: 7, status: 99, message: [1; KVB_ERROR_MESSAGE_CAPACITY] };
    unsafe { kvb_error_init(&mut err) };
    assert_eq!(err.struct_size as usize, std::mem::size_of::<kvb_error>());
    assert_eq!(err.status, KVB_OK);
    assert!(err.message.iter().all(|&c| c == 0));
}

#[test]
fn a_failing_call_reports_status_and_message_in_the_same_call() {
    let mut err = unsafe { std::mem::zeroed::<kvb_error>() };
    unsafe { kvb_error_init(&mut err) };
    let mut plan: *mut kvb_plan = 1 as *mut kvb_plan; // must be reset to NULL on failure
    let bytes = [0u8; 4];
    let status = unsafe { kvb_plan_load_memory(bytes.as_ptr().cast(), bytes.len(), &mut plan, &mut err) };
    assert_eq!(status, KVB_ERR_CORRUPT_DATA);
    assert_eq!(err.status, KVB_ERR_CORRUPT_DATA);
    assert!(plan.is_null());
    let message = unsafe { CStr::from_ptr(err.message.as_ptr()) }.to_str().unwrap();
    assert!(!message.is_empty());
}

#[test]
fn context_last_error_has_snprintf_semantics() {
    let mut ctx: *mut kvb_context = std::ptr::null_mut();
    let mut params = unsafe { std::mem::zeroed::<kvb_context_params>() };
    unsafe { kvb_context_params_default(&mut params) };
    params.backend = KVB_BACKEND_CPU;
    params.n_threads = 1;
    assert_eq!(unsafe { kvb_context_create(&params, &mut ctx, std::ptr::null_mut()) }, KVB_OK);
    assert_eq!(unsafe { kvb_context_last_error(ctx, std::ptr::null_mut(), 0) }, 0);
    // A cache without a plan fails and records its message on the context.
    let mut cache: *mut kvb_cache = std::ptr::null_mut();
    let mut cp = unsafe { std::mem::zeroed::<kvb_cache_params>() };
    unsafe { kvb_cache_params_default(&mut cp) };
    let status = unsafe { kvb_cache_create(ctx, std::ptr::null(), &cp, &mut cache, std::ptr::null_mut()) };
    assert_eq!(status, KVB_ERR_NULL_POINTER);
    assert!(cache.is_null());
    let full = unsafe { kvb_context_last_error(ctx, std::ptr::null_mut(), 0) };
    assert!(full > 8);
    let mut buf = [0x55 as c_char; 6];
    assert_eq!(unsafe { kvb_context_last_error(ctx, buf.as_mut_ptr(), buf.len()) }, full);
    assert_eq!(buf[5], 0, "truncated to cap - 1 bytes and NUL-terminated");
    let mut whole = vec![0 as c_char; full + 1];
    assert_eq!(unsafe { kvb_context_last_error(ctx, whole.as_mut_ptr(), whole.len()) }, full);
    assert_eq!(&whole[..5], &buf[..5]);
    let text = unsafe { CStr::from_ptr(whole.as_ptr()) }.to_str().unwrap();
    assert_eq!(text.len(), full);
    assert!(text.contains("plan"), "{}", text);
    unsafe { kvb_context_destroy(ctx) };
}
