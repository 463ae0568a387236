//! Versions, status names, the Error type and the Send/Sync contract.
mod common;
use common::*;
use kvbits::{Cache, Calibrator, Context, Error, Plan, Status};

#[test]
fn loaded_library_matches_the_header_version() {
    assert_eq!(kvbits::version_number(), kvbits::HEADER_VERSION_NUMBER);
    assert_eq!(kvbits::HEADER_VERSION_NUMBER, 100); // 0.1.0
    assert_eq!(kvbits::version_string(), "0.1.0");
}

#[test]
fn statuses_round_trip_their_codes_and_library_names() {
    let all = [
        (Status::InvalidArgument, 1, "invalid_argument"),
        (Status::NullPointer, 2, "null_pointer"),
        (Status::ShapeMismatch, 3, "shape_mismatch"),
        (Status::Unsupported, 4, "unsupported"),
        (Status::CorruptData, 5, "corrupt_data"),
        (Status::VersionUnsupported, 6, "version_unsupported"),
        (Status::Io, 7, "io_error"),
        (Status::OutOfMemory, 8, "out_of_memory"),
        (Status::CapacityExhausted, 9, "capacity_exhausted"),
        (Status::NotFound, 10, "not_found"),
        (Status::Internal, 11, "internal"),
        (Status::Device, 12, "device_error"),
    ];
    for (status, code, name) in all.iter() {
        assert_eq!(status.code(), *code);
        assert_eq!(Status::from_code(*code), *status);
        assert_eq!(status.name(), *name);
    }
    assert_eq!(Status::from_code(77), Status::Unknown(77));
    assert_eq!(Status::Unknown(77).name(), "unknown_status");
    assert_eq!(kvbits::status_string(0), "ok");
}

#[test]
fn errors_display_status_and_message_and_are_std_errors() {
    let err = Plan::from_bytes(&[1, 2, 3]).unwrap_err();
    assert_eq!(err.status(), Status::CorruptData);
    let text = err.to_string();
    assert!(text.starts_with("corrupt_data: "), "{}", text);
    assert!(text.len() > "corrupt_data: ".len());
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err.clone());
    assert_eq!(boxed.to_string(), text);
}

#[test]
fn handles_have_the_documented_thread_traits() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Plan>();
    send_sync::<Context>();
    send::<Cache>();
    send::<Calibrator>();
    send_sync::<Error>();
    // Cache and Calibrator are not Sync: the compile_fail doc tests on them prove it.
}

#[test]
fn plan_and_context_are_shared_across_threads() {
    let ctx = std::sync::Arc::new(cpu());
    let plan = std::sync::Arc::new(plan3(&ctx));
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let (ctx, plan) = (ctx.clone(), plan.clone());
            std::thread::spawn(move || {
                let mut cache = cache(&ctx, &plan);
                let seq = cache.seq_add().unwrap();
                let data = vec![0.25f32 * i as f32; 2 * kv_row()];
                cache.append(0, &[seq], &[2], &data, &data).unwrap();
                cache.seq_length(seq, 0).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 2);
    }
}
