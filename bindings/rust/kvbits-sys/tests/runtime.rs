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
