//! Round trips and refusals across every message family: what encodes decodes to itself, and
//! every malformed or over-cap frame is refused without a panic.

use super::frame::Writer;
use super::*;
use proptest::prelude::*;

fn body(frame: &[u8]) -> &[u8] {
    &frame[LENGTH_LEN..]
}

fn decode_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
    Request::decode(&Frame::parse(body(bytes))?)
}

fn decode_response(bytes: &[u8]) -> Result<Response, ProtocolError> {
    Response::decode(&Frame::parse(body(bytes))?)
}

/// A frame with the given type, id and raw payload, length field included.
fn raw_frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Writer::new(kind, id, payload.len());
    out.raw(payload);
    out.finish().expect("small frame")
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        .prop_filter("within the path cap", |text| text.len() <= MAX_PATH)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        bytes(64),
        0u8..4,
        any::<u64>(),
        any::<i64>(),
        0u32..1_000_000_000,
        0u32..=0o7777,
    )
        .prop_map(|(name, kind, size, mtime, mtime_nanoseconds, mode)| Entry {
            name,
            kind: [
                EntryKind::File,
                EntryKind::Directory,
                EntryKind::Symlink,
                EntryKind::Special,
            ][kind as usize],
            size,
            mtime,
            mtime_nanoseconds,
            mode,
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    (1u8..=8).prop_map(|byte| ErrorCode::from_byte(byte).expect("valid code"))
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (text(40), any::<bool>()).prop_map(|(path, follow)| Request::Stat { path, follow }),
        text(40).prop_map(|path| Request::List { path }),
        text(40).prop_map(|path| Request::ReadLink { path }),
        text(40).prop_map(|path| Request::OpenRead { path }),
        text(40).prop_map(|path| Request::OpenWrite { path }),
        (any::<u64>(), any::<u64>(), 0..=MAX_DATA).prop_map(|(handle, offset, length)| {
            Request::Read {
                handle,
                offset,
                length,
            }
        }),
        (any::<u64>(), any::<u64>(), bytes(300)).prop_map(|(handle, offset, data)| {
            Request::Write {
                handle,
                offset,
                data,
            }
        }),
        any::<u64>().prop_map(|handle| Request::Sync { handle }),
        any::<u64>().prop_map(|handle| Request::SyncFilesystem { handle }),
        (
            text(40),
            any::<u32>(),
            any::<i64>(),
            any::<[u8; 32]>(),
            bytes(300)
        )
            .prop_map(|(path, mode, mtime, hash, data)| Request::PutFile {
                path,
                mode,
                mtime,
                hash,
                data,
            }),
        any::<u64>().prop_map(|handle| Request::Close { handle }),
        (text(40), 0..=MAX_DATA)
            .prop_map(|(path, max_length)| Request::ReadFile { path, max_length }),
        (text(40), 0..=MAX_DATA)
            .prop_map(|(path, max_length)| Request::ReadFileHashed { path, max_length }),
        (any::<u64>(), any::<u64>(), 0..=MAX_DATA).prop_map(|(handle, offset, length)| {
            Request::ReadHashed {
                handle,
                offset,
                length,
            }
        }),
        (
            any::<u64>(),
            any::<Option<u64>>(),
            any::<Option<u32>>(),
            any::<Option<i64>>()
        )
            .prop_map(|(handle, size, mode, mtime)| Request::SetFileAttributes {
                handle,
                size,
                mode,
                mtime,
            }),
        (
            text(40),
            any::<Option<u64>>(),
            any::<Option<u32>>(),
            any::<Option<i64>>()
        )
            .prop_map(|(path, size, mode, mtime)| Request::SetAttributes {
                path,
                size,
                mode,
                mtime,
            }),
        (text(40), any::<u32>()).prop_map(|(path, mode)| Request::MakeDirectory { path, mode }),
        (text(40), text(40)).prop_map(|(path, target)| Request::MakeSymlink { path, target }),
        text(40).prop_map(|path| Request::Remove { path }),
        (text(40), text(40)).prop_map(|(from, to)| Request::Rename { from, to }),
        text(40).prop_map(|path| Request::Digest { path }),
        (text(40), any::<u32>(), any::<u64>(), 0..=MAX_HASHES).prop_map(
            |(path, block_size, first, count)| Request::BlockHashes {
                path,
                block_size,
                first,
                count,
            }
        ),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        proptest::option::of(entry()).prop_map(Response::Entry),
        (proptest::collection::vec(entry(), 0..20), any::<bool>())
            .prop_map(|(entries, last)| Response::EntryBatch { entries, last }),
        bytes(100).prop_map(Response::Text),
        any::<u64>().prop_map(Response::Handle),
        bytes(500).prop_map(Response::Data),
        Just(Response::Done),
        any::<[u8; 32]>().prop_map(Response::Hash),
        proptest::collection::vec(any::<[u8; 32]>(), 0..40).prop_map(Response::Hashes),
        (any::<[u8; 32]>(), bytes(500))
            .prop_map(|(hash, data)| Response::HashedData { hash, data }),
        (error_code(), text(60).prop_map(cap_message))
            .prop_map(|(code, message)| Response::Error { code, message }),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(request in request(), id in 1u32..) {
        let frame = request.encode(id).expect("encodable");
        let (split, used) = Frame::split(&frame).expect("valid").expect("whole");
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(split.id, id);
        prop_assert_eq!(Request::decode(&split).expect("decodes"), request.clone());
        // The frame in two parts is the same bytes.
        let parts = request.clone().encode_owned(id).expect("encodable");
        prop_assert_eq!([parts.head, parts.data].concat(), frame.clone());
        // Decoding the body as a reader splits it (a Write's data apart) gives the same, and
        // so does the body in one piece.
        prop_assert_eq!(
            Request::decode_parts(split_body(&frame[LENGTH_LEN..])),
            Ok((id, request.clone()))
        );
        prop_assert_eq!(
            Request::decode_parts(FrameBody::whole(frame[LENGTH_LEN..].to_vec())),
            Ok((id, request.clone()))
        );
        // A request is never mistaken for a response or a hello.
        prop_assert!(Response::decode(&split).is_err());
        prop_assert!(ClientHello::decode(&split).is_err());
        // Every proper prefix is incomplete, never a frame.
        for cut in [0, 1, 3, 4, frame.len() / 2, frame.len() - 1] {
            prop_assert_eq!(Frame::split(&frame[..cut]), Ok(None));
        }
        prop_assert_ne!(request.response_kind(), ResponseKind::Error);
    }

    #[test]
    fn responses_round_trip(response in response(), id in 1u32..) {
        let frame = response.encode(id).expect("encodable");
        let (split, used) = Frame::split(&frame).expect("valid").expect("whole");
        prop_assert_eq!(used, frame.len());
        let decoded = Response::decode(&split).expect("decodes");
        prop_assert_eq!(decoded.kind(), response.kind());
        prop_assert_eq!(decoded, response.clone());
        prop_assert_eq!(
            Response::decode_parts(split_body(&frame[LENGTH_LEN..])),
            Ok((id, response.clone()))
        );
        prop_assert_eq!(
            Response::decode_parts(FrameBody::whole(frame[LENGTH_LEN..].to_vec())),
            Ok((id, response.clone()))
        );
        // The frame in two parts is the same bytes.
        let parts = response.clone().encode_owned(id).expect("encodable");
        prop_assert_eq!([parts.head, parts.data].concat(), frame.clone());
        prop_assert!(Request::decode(&split).is_err());
        prop_assert!(ServerHello::decode(&split).is_err());
    }

    #[test]
    fn hellos_round_trip(
        min_version in any::<u16>(),
        max_version in any::<u16>(),
        version in "[0-9a-z.+-]{0,64}",
        executable_blake3 in any::<[u8; 32]>(),
        os in "[a-z0-9_]{0,32}",
        arch in "[a-z0-9_]{0,32}",
    ) {
        let hello = ServerHello {
            min_version,
            max_version,
            build: BuildId { version, executable_blake3, os, arch },
        };
        let frame = hello.encode().expect("encodable");
        let (split, _) = Frame::split(&frame).expect("valid").expect("whole");
        prop_assert_eq!(ServerHello::decode(&split).expect("decodes"), hello);
        let client = ClientHello { version: min_version };
        let frame = client.encode().expect("encodable");
        prop_assert_eq!(decode_client_hello(&frame), Ok(client));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(200)) {
        let _ = Frame::split(&data);
        if let Ok(frame) = Frame::parse(&data) {
            if let Ok(request) = Request::decode(&frame) {
                // Decoding is canonical: only the encoding of a request decodes to it.
                let encoded = request.encode(frame.id).expect("re-encodes");
                prop_assert_eq!(&encoded[LENGTH_LEN..], &data[..]);
            }
            if let Ok(response) = Response::decode(&frame) {
                let encoded = response.encode(frame.id).expect("re-encodes");
                prop_assert_eq!(&encoded[LENGTH_LEN..], &data[..]);
            }
        }
    }
}

fn decode_client_hello(bytes: &[u8]) -> Result<ClientHello, ProtocolError> {
    ClientHello::decode(&Frame::parse(body(bytes))?)
}

#[test]
fn versions_meet_at_the_highest_common() {
    assert_eq!(choose_version((1, 3), (1, 2)), Some(2));
    assert_eq!(choose_version((1, 1), (1, 1)), Some(1));
    assert_eq!(choose_version((2, 5), (1, 3)), Some(3));
    assert_eq!(choose_version((3, 4), (1, 2)), None);
    assert_eq!(choose_version((2, 1), (1, 2)), None);
}

#[test]
fn oversized_lengths_are_refused_from_the_prefix_alone() {
    for length in [MAX_FRAME + 1, u32::MAX] {
        let prefix = length.to_be_bytes();
        assert_eq!(
            frame_length(prefix),
            Err(ProtocolError::FrameTooLarge { length })
        );
        // Only the length field is there: refused before anything else is needed.
        assert_eq!(
            Frame::split(&prefix),
            Err(ProtocolError::FrameTooLarge { length })
        );
    }
    assert_eq!(
        frame_length(MAX_FRAME.to_be_bytes()),
        Ok(MAX_FRAME as usize)
    );
    for length in 0..FRAME_HEADER_LEN as u32 {
        assert_eq!(
            frame_length(length.to_be_bytes()),
            Err(ProtocolError::FrameTooShort { length })
        );
    }
    // The largest data fits a frame; one byte more does not encode.
    let data = vec![7u8; MAX_DATA as usize];
    let frame = Response::Data(data.clone()).encode(1).expect("fits");
    assert_eq!(decode_response(&frame), Ok(Response::Data(data)));
    let mut data = vec![7u8; MAX_DATA as usize + 1];
    assert!(Response::Data(data.clone()).encode(1).is_err());
    data.pop();
    assert!(
        Request::Write {
            handle: 1,
            offset: 0,
            data
        }
        .encode(1)
        .is_ok()
    );
}

#[test]
fn truncated_and_trailing_payloads_are_refused() {
    let request = Request::Rename {
        from: "a".into(),
        to: "bc".into(),
    };
    let frame = request.encode(9).expect("encodable");
    let whole = body(&frame);
    for cut in FRAME_HEADER_LEN..whole.len() {
        let frame = Frame::parse(&whole[..cut]).expect("header is there");
        assert_eq!(
            Request::decode(&frame),
            Err(ProtocolError::Truncated { what: "request" })
        );
    }
    let mut longer = whole.to_vec();
    longer.push(0);
    assert_eq!(
        Request::decode(&Frame::parse(&longer).expect("frame")),
        Err(ProtocolError::TrailingBytes {
            what: "request",
            count: 1
        })
    );
    let mut payload = Response::Done.encode(3).expect("encodable");
    payload.push(1);
    payload[..4].copy_from_slice(&6u32.to_be_bytes());
    assert_eq!(
        decode_response(&payload),
        Err(ProtocolError::TrailingBytes {
            what: "response",
            count: 1
        })
    );
    // A hashes frame claiming more hashes than it holds.
    let mut payload = 3u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0; 64]);
    assert_eq!(
        decode_response(&raw_frame(kind::HASHES, 1, &payload)),
        Err(ProtocolError::Truncated { what: "response" })
    );
}

#[test]
fn bad_types_flags_and_ids_are_refused() {
    assert_eq!(
        decode_request(&raw_frame(0x55, 1, &[])),
        Err(ProtocolError::UnknownType(0x55))
    );
    assert_eq!(
        decode_response(&raw_frame(kind::STAT, 1, &[])),
        Err(ProtocolError::UnknownType(kind::STAT))
    );
    assert!(decode_request(&raw_frame(kind::DONE, 1, &[])).is_err());
    // Request id 0 is reserved.
    assert!(decode_request(&raw_frame(kind::SYNC, 0, &[0; 8])).is_err());
    assert!(decode_response(&raw_frame(kind::DONE, 0, &[])).is_err());
    assert!(
        decode_response(&raw_frame(kind::ERROR, 0, &[6, 0, 0, 0, 1, b'x'])).is_ok(),
        "a protocol-level error uses id 0"
    );
    assert!(Request::Sync { handle: 1 }.encode(0).is_err());
    // Flags are 0 or 1.
    let mut stat = Request::Stat {
        path: "x".into(),
        follow: true,
    }
    .encode(1)
    .expect("encodable");
    *stat.last_mut().expect("flag") = 2;
    assert_eq!(
        decode_request(&stat),
        Err(ProtocolError::Invalid {
            what: "follow flag",
            value: 2
        })
    );
    // Unknown error codes and entry kinds.
    assert!(decode_response(&raw_frame(kind::ERROR, 1, &[9, 0, 0, 0, 0])).is_err());
    assert!(decode_response(&raw_frame(kind::ERROR, 1, &[0, 0, 0, 0, 0])).is_err());
    let entry = Entry {
        name: b"n".to_vec(),
        kind: EntryKind::File,
        size: 1,
        mtime: 2,
        mtime_nanoseconds: 3,
        mode: 0o644,
    };
    let mut frame = Response::Entry(Some(entry.clone()))
        .encode(1)
        .expect("encodable");
    // The kind byte follows the option flag and the 5-byte name.
    frame[LENGTH_LEN + FRAME_HEADER_LEN + 1 + 5] = 4;
    assert_eq!(
        decode_response(&frame),
        Err(ProtocolError::Invalid {
            what: "entry kind",
            value: 4
        })
    );
    for bad in [
        Entry {
            mtime_nanoseconds: 1_000_000_000,
            ..entry.clone()
        },
        Entry {
            mode: 0o10000,
            ..entry.clone()
        },
    ] {
        assert!(Response::Entry(Some(bad)).encode(1).is_err());
    }
    // Strings that must be UTF-8.
    let mut payload = 1u32.to_be_bytes().to_vec();
    payload.push(0xff);
    assert_eq!(
        decode_request(&raw_frame(kind::LIST, 1, &payload)),
        Err(ProtocolError::NotUtf8 { what: "path" })
    );
    // A hello with a request id.
    let mut hello = ClientHello { version: 1 }.encode().expect("encodable");
    hello[8] = 1;
    assert!(decode_client_hello(&hello).is_err());
}

#[test]
fn data_apart_from_its_fields_must_be_as_long_as_they_say() {
    let data = Response::Data(vec![5; 100]).encode(3).expect("encodable");
    let mut parts = split_body(&data[LENGTH_LEN..]);
    assert_eq!(parts.bulk.len(), 100);
    parts.bulk.push(0);
    assert_eq!(
        Response::decode_parts(parts.clone()),
        Err(ProtocolError::TrailingBytes {
            what: "response",
            count: 1
        })
    );
    parts.bulk.truncate(99);
    assert_eq!(
        Response::decode_parts(parts),
        Err(ProtocolError::Truncated { what: "response" })
    );
    let write = Request::Write {
        handle: 1,
        offset: 2,
        data: vec![7; 10],
    }
    .encode(4)
    .expect("encodable");
    let mut parts = split_body(&write[LENGTH_LEN..]);
    parts.bulk.pop();
    assert_eq!(
        Request::decode_parts(parts),
        Err(ProtocolError::Truncated { what: "request" })
    );
    // Bytes apart from a message that carries no file data are read as the rest of its body.
    let done = Response::Done.encode(5).expect("encodable");
    let parts = FrameBody {
        head: done[LENGTH_LEN..].to_vec(),
        bulk: vec![1],
    };
    assert_eq!(
        Response::decode_parts(parts),
        Err(ProtocolError::TrailingBytes {
            what: "response",
            count: 1
        })
    );
}

#[test]
fn counts_and_strings_over_their_caps_are_refused() {
    // Caps are checked on the announced length, before the bytes are looked for.
    let over = |cap: usize| (cap as u32 + 1).to_be_bytes().to_vec();
    assert_eq!(
        decode_request(&raw_frame(kind::LIST, 1, &over(MAX_PATH))),
        Err(ProtocolError::TooLong {
            what: "path",
            length: MAX_PATH as u64 + 1,
            cap: MAX_PATH as u64
        })
    );
    assert!(matches!(
        decode_response(&raw_frame(
            kind::ERROR,
            1,
            &[[1].as_slice(), &over(MAX_MESSAGE)].concat()
        )),
        Err(ProtocolError::TooLong {
            what: "error message",
            ..
        })
    ));
    assert!(matches!(
        decode_response(&raw_frame(kind::ENTRY_BATCH, 1, &over(MAX_LIST_BATCH))),
        Err(ProtocolError::TooMany {
            what: "entries in a batch",
            ..
        })
    ));
    assert!(matches!(
        decode_response(&raw_frame(kind::HASHES, 1, &over(MAX_HASHES as usize))),
        Err(ProtocolError::TooMany { what: "hashes", .. })
    ));
    assert!(matches!(
        decode_response(&raw_frame(kind::DATA, 1, &over(MAX_DATA as usize))),
        Err(ProtocolError::TooLong { what: "data", .. })
    ));
    assert!(matches!(
        decode_response(&raw_frame(kind::TEXT, 1, &over(MAX_PATH))),
        Err(ProtocolError::TooLong {
            what: "link target",
            ..
        })
    ));
    let mut read = vec![0u8; 16];
    read.extend_from_slice(&(MAX_DATA + 1).to_be_bytes());
    assert!(matches!(
        decode_request(&raw_frame(kind::READ, 1, &read)),
        Err(ProtocolError::TooLong {
            what: "read length",
            ..
        })
    ));
    let mut hashes = 0u32.to_be_bytes().to_vec();
    hashes.extend_from_slice(&4096u32.to_be_bytes());
    hashes.extend_from_slice(&0u64.to_be_bytes());
    hashes.extend_from_slice(&(MAX_HASHES + 1).to_be_bytes());
    assert!(matches!(
        decode_request(&raw_frame(kind::BLOCK_HASHES, 1, &hashes)),
        Err(ProtocolError::TooMany {
            what: "blocks to hash",
            ..
        })
    ));
    let mut hello = [1u16.to_be_bytes(), 1u16.to_be_bytes()].concat();
    hello.extend_from_slice(&over(MAX_BUILD_VERSION));
    assert!(
        ServerHello::decode(&Frame {
            kind: kind::SERVER_HELLO,
            id: 0,
            payload: &hello
        })
        .is_err()
    );
    // And the encoders refuse what the decoders would.
    let long = "x".repeat(MAX_PATH + 1);
    assert!(Request::List { path: long.clone() }.encode(1).is_err());
    assert!(
        Request::List {
            path: long[1..].to_string()
        }
        .encode(1)
        .is_ok()
    );
    assert!(
        Response::Error {
            code: ErrorCode::Other,
            message: "x".repeat(MAX_MESSAGE + 1)
        }
        .encode(1)
        .is_err()
    );
    assert_eq!(cap_message("é".repeat(MAX_MESSAGE)).len(), MAX_MESSAGE);
    assert!(
        Response::Hashes(vec![[0; 32]; MAX_HASHES as usize + 1])
            .encode(1)
            .is_err()
    );
    assert!(
        Response::Hashes(vec![[0; 32]; MAX_HASHES as usize])
            .encode(1)
            .is_ok()
    );
    // The largest batch the caps allow fits one frame.
    let entry = Entry {
        name: vec![b'n'; MAX_NAME],
        kind: EntryKind::File,
        size: 0,
        mtime: 0,
        mtime_nanoseconds: 0,
        mode: 0,
    };
    let largest = Response::EntryBatch {
        entries: vec![entry; MAX_LIST_BATCH],
        last: true,
    };
    let frame = largest.encode(1).expect("the largest batch fits a frame");
    assert_eq!(decode_response(&frame), Ok(largest));
}

/// A frame answering a List with one entry named `name` (nothing checked on the way out).
fn batch_of_one(name: &[u8]) -> Vec<u8> {
    let mut payload = 1u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
    payload.extend_from_slice(name);
    // File kind, size, mtime, nanoseconds, mode; then the last flag.
    payload.push(0);
    payload.extend_from_slice(&[0; 8 + 8 + 4]);
    payload.extend_from_slice(&0o644u32.to_be_bytes());
    payload.push(1);
    raw_frame(kind::ENTRY_BATCH, 1, &payload)
}

#[test]
fn entry_names_are_capped_at_one_path_component() {
    // 255 bytes, NAME_MAX, is a name; one more is a protocol error, in a batch or alone.
    let longest = vec![b'n'; MAX_NAME];
    match decode_response(&batch_of_one(&longest)) {
        Ok(Response::EntryBatch { entries, last }) => {
            assert!(last);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].name, longest);
        }
        other => panic!("a {MAX_NAME}-byte name is refused: {other:?}"),
    }
    let over = vec![b'n'; MAX_NAME + 1];
    let too_long = ProtocolError::TooLong {
        what: "entry name",
        length: MAX_NAME as u64 + 1,
        cap: MAX_NAME as u64,
    };
    assert_eq!(decode_response(&batch_of_one(&over)), Err(too_long.clone()));
    // The cap is checked on the announced length, before the bytes are looked for.
    let mut announced = batch_of_one(b"");
    let at = LENGTH_LEN + FRAME_HEADER_LEN + 4;
    announced[at..at + 4].copy_from_slice(&(MAX_PATH as u32).to_be_bytes());
    assert!(matches!(
        decode_response(&announced),
        Err(ProtocolError::TooLong {
            what: "entry name",
            ..
        })
    ));
    // A Stat answer's entry has the same cap, and the encoders refuse what is refused.
    let entry = |name: Vec<u8>| Entry {
        name,
        kind: EntryKind::Directory,
        size: 0,
        mtime: 0,
        mtime_nanoseconds: 0,
        mode: 0o755,
    };
    let frame = Response::Entry(Some(entry(longest.clone())))
        .encode(1)
        .expect("a name of NAME_MAX bytes encodes");
    assert_eq!(
        decode_response(&frame),
        Ok(Response::Entry(Some(entry(longest))))
    );
    assert_eq!(
        Response::Entry(Some(entry(over.clone()))).encode(1).err(),
        Some(too_long)
    );
    assert!(
        Response::EntryBatch {
            entries: vec![entry(over)],
            last: true
        }
        .encode(1)
        .is_err()
    );
}
