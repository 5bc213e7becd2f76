//! Agent protocol frames (`xfer::agent::protocol`): any bytes, read as a stream of frames the way
//! the agent reads requests and the client reads responses, decode or are refused without
//! panicking, whatever decodes re-encodes to exactly the same bytes, the decoders of a body split
//! as a reader splits it (file data apart) agree with those of a borrowed frame, and no decoded
//! entry has a name over the name cap.
#![no_main]

use xfer::agent::protocol::{
    ClientHello, Frame, FrameBody, LENGTH_LEN, MAX_NAME, Request, Response, ServerHello,
    split_body,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The input as a stream of frames, as both ends read it.
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::split(rest) {
        check_frame(&rest[..used], &frame);
        rest = &rest[used..];
    }
    // The input as one frame body, whatever its length says.
    if let Ok(frame) = Frame::parse(data) {
        let mut whole = (data.len() as u32).to_be_bytes().to_vec();
        whole.extend_from_slice(data);
        check_frame(&whole, &frame);
    }
});

/// Decodes one frame (`bytes`, length field included) every way a peer could, and checks that a
/// successful decode is canonical.
fn check_frame(bytes: &[u8], frame: &Frame<'_>) {
    assert!(bytes.len() > LENGTH_LEN);
    if let Ok(request) = Request::decode(frame) {
        assert_eq!(request.encode(frame.id).as_deref(), Ok(bytes));
    }
    if let Ok(response) = Response::decode(frame) {
        assert_eq!(response.encode(frame.id).as_deref(), Ok(bytes));
        // A listing's memory is bounded by its names' cap, so no name may get past it.
        let names: Vec<&[u8]> = match &response {
            Response::Entry(entry) => entry.iter().map(|entry| entry.name.as_slice()).collect(),
            Response::EntryBatch { entries, .. } => {
                entries.iter().map(|entry| entry.name.as_slice()).collect()
            }
            _ => Vec::new(),
        };
        assert!(names.iter().all(|name| name.len() <= MAX_NAME));
    }
    // The decoders of a body as a reader gives it (file data apart from the fields, or the
    // body in one piece) agree with the borrowing ones, errors included.
    let body = &bytes[LENGTH_LEN..];
    for parts in [split_body(body), FrameBody::whole(body.to_vec())] {
        assert_eq!(
            Request::decode_parts(parts.clone()),
            Request::decode(frame).map(|request| (frame.id, request))
        );
        assert_eq!(
            Response::decode_parts(parts),
            Response::decode(frame).map(|response| (frame.id, response))
        );
    }
    if let Ok(hello) = ServerHello::decode(frame) {
        assert_eq!(hello.encode().as_deref(), Ok(bytes));
    }
    if let Ok(hello) = ClientHello::decode(frame) {
        assert_eq!(hello.encode().as_deref(), Ok(bytes));
    }
}
