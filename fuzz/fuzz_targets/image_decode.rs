//! Fuzzes `deeprecog_dataset::Image::decode` (JPEG/PNG, format sniffed from the bytes) and, on
//! success, the resize path: `Resize::new(16, 12)` on whatever odd size was decoded. Both must
//! return `Ok` or `Err`, never panic.
#![no_main]

use std::path::Path;

use deeprecog_dataset::transforms::Resize;
use deeprecog_dataset::Image;
use libfuzzer_sys::fuzz_target;

/// Decoded images larger than this many pixels skip the resize (the decode itself already ran;
/// resizing a multi-megapixel image per input would only slow the fuzzer down).
const MAX_RESIZE_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::decode(data, Path::new("fuzz/image")) else {
        return;
    };
    assert_eq!(
        image.as_bytes().len(),
        image.width() as usize * image.height() as usize * image.channels() as usize
    );
    if u64::from(image.width()) * u64::from(image.height()) > MAX_RESIZE_PIXELS {
        return;
    }
    if let Ok(out) = Resize::new(16, 12).resize(&image) {
        assert_eq!((out.width(), out.height()), (16, 12));
        assert_eq!(out.as_bytes().len(), 16 * 12 * out.channels() as usize);
    }
});
