//! Parsing of S3's XML answers with quick-xml. Entities are decoded, so keys
//! holding `& < > ' "` come back as they were stored.

use quick_xml::events::Event;
use quick_xml::Reader;

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The `<Key>` of every `<Contents>`.
    pub keys: Vec<String>,
    /// `<IsTruncated>true</IsTruncated>`.
    pub is_truncated: bool,
    /// `<NextContinuationToken>`.
    pub next_token: Option<String>,
    /// The `<Prefix>` of every `<CommonPrefixes>` (with a delimiter).
    pub prefixes: Vec<String>,
}

/// The `<Code>` and `<Message>` of an S3 `<Error>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// e.g. `NoSuchKey`, `SignatureDoesNotMatch`.
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

/// Parses a ListObjectsV2 result. Anything that is not one whole
/// `<ListBucketResult>` (HTML from a proxy, an empty body, an `<Error>`, a
/// document cut off) is an error, never a short page: a cleanup job would
/// act on a short page.
pub fn parse_list(xml: &[u8]) -> Result<ListPage, String> {
    let mut page = ListPage::default();
    let mut root = None;
    walk(xml, |path, text| {
        if path.len() == 1 {
            root = Some(path[0].to_string());
        }
        match path {
            ["ListBucketResult", "Contents", "Key"] => page.keys.push(text),
            ["ListBucketResult", "IsTruncated"] => page.is_truncated = text == "true",
            ["ListBucketResult", "NextContinuationToken"] => page.next_token = Some(text),
            ["ListBucketResult", "CommonPrefixes", "Prefix"] => page.prefixes.push(text),
            _ => {}
        }
    })?;
    match root.as_deref() {
        Some("ListBucketResult") => {}
        Some(other) => {
            return Err(format!(
                "expected a ListBucketResult document, got <{other}>"
            ))
        }
        None => return Err("expected a ListBucketResult document, got no XML element".into()),
    }
    if page.is_truncated && page.next_token.as_deref().is_none_or(str::is_empty) {
        return Err("the listing is truncated but gives no continuation token".into());
    }
    Ok(page)
}

/// Parses an error body; a body that is not XML gives empty fields.
pub fn parse_error(xml: &[u8]) -> ErrorBody {
    let mut body = ErrorBody::default();
    let _ = walk(xml, |path, text| match path {
        ["Error", "Code"] => body.code = text,
        ["Error", "Message"] => body.message = text,
        _ => {}
    });
    body
}

/// The `<Endpoint>` of a redirect's `<Error>`, if any.
pub fn parse_endpoint(xml: &[u8]) -> Result<String, String> {
    let mut endpoint = String::new();
    walk(xml, |path, text| {
        if path == ["Error", "Endpoint"] {
            endpoint = text;
        }
    })?;
    Ok(endpoint)
}

/// The `<UploadId>` of a CreateMultipartUpload answer; anything else is
/// an error.
pub fn parse_upload_id(xml: &[u8]) -> Result<String, String> {
    let mut id = String::new();
    walk(xml, |path, text| {
        if path == ["InitiateMultipartUploadResult", "UploadId"] {
            id = text;
        }
    })?;
    if id.is_empty() {
        Err("expected an InitiateMultipartUploadResult with an UploadId".into())
    } else {
        Ok(id)
    }
}

/// One uploaded part, as CompleteMultipartUpload lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based.
    pub number: u32,
    /// The ETag UploadPart answered, quotes included.
    pub etag: String,
    /// The part's base64 CRC-32.
    pub crc32: String,
}

/// The body of CompleteMultipartUpload.
pub fn complete_request(parts: &[CompletedPart]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for p in parts {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
            p.number,
            quick_xml::escape::escape(&p.etag),
        ));
        // No checksum is named where the provider takes no checksum headers.
        if !p.crc32.is_empty() {
            body.push_str(&format!(
                "<ChecksumCRC32>{}</ChecksumCRC32>",
                quick_xml::escape::escape(&p.crc32)
            ));
        }
        body.push_str("</Part>");
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

/// What CompleteMultipartUpload answered: the object's ETag and checksum,
/// or the error a 200 can carry in its body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CompleteResult {
    /// `<ETag>`.
    pub etag: String,
    /// `<ChecksumCRC32>`, when the server gives it.
    pub crc32: Option<String>,
}

/// Parses a CompleteMultipartUpload answer; an `<Error>` (sent with a 200)
/// or another document is `Err` with the error's code and message.
pub fn parse_complete(xml: &[u8]) -> Result<CompleteResult, ErrorBody> {
    let mut result = CompleteResult::default();
    let mut root = None;
    let walked = walk(xml, |path, text| {
        if path.len() == 1 {
            root = Some(path[0].to_string());
        }
        match path {
            ["CompleteMultipartUploadResult", "ETag"] => result.etag = text,
            ["CompleteMultipartUploadResult", "ChecksumCRC32"] => result.crc32 = Some(text),
            _ => {}
        }
    });
    match (walked, root.as_deref()) {
        (Ok(()), Some("CompleteMultipartUploadResult")) => Ok(result),
        (Ok(()), Some("Error")) => Err(parse_error(xml)),
        (walked, _) => Err(ErrorBody {
            code: "MalformedXML".into(),
            message: walked
                .err()
                .unwrap_or_else(|| "expected a CompleteMultipartUploadResult".into()),
        }),
    }
}

/// Checks that a success answer is one whole `<root>` document. S3 sends
/// an `<Error>` with a 200 when a copy or a completion fails after the
/// status went out: that is `Err` with its code. Anything else (HTML from a
/// proxy, an empty or cut body, another document) is `MalformedXML`.
pub fn expect_document(xml: &[u8], root: &str) -> Result<(), ErrorBody> {
    let mut found = None;
    let walked = walk(xml, |path, _| {
        if path.len() == 1 {
            found = Some(path[0].to_string());
        }
    });
    match (walked, found.as_deref()) {
        (Ok(()), Some(r)) if r == root => Ok(()),
        (Ok(()), Some("Error")) => {
            let error = parse_error(xml);
            if error.code.is_empty() {
                Err(ErrorBody {
                    code: "MalformedXML".into(),
                    message: "the answer is an <Error> without a <Code>".into(),
                })
            } else {
                Err(error)
            }
        }
        (Ok(()), Some(other)) => Err(ErrorBody {
            code: "MalformedXML".into(),
            message: format!("expected a {root} document, got <{other}>"),
        }),
        (Ok(()), None) => Err(ErrorBody {
            code: "MalformedXML".into(),
            message: format!("expected a {root} document, got no XML element"),
        }),
        (Err(e), _) => Err(ErrorBody {
            code: "MalformedXML".into(),
            message: format!("expected a {root} document: {e}"),
        }),
    }
}

/// One multipart upload in progress, from ListMultipartUploads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The object key (the store's prefix included).
    pub key: String,
    /// The upload id.
    pub id: String,
    /// `<Initiated>` (ISO 8601), as the server wrote it.
    pub initiated: String,
}

/// One page of a ListMultipartUploads answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UploadsPage {
    /// The uploads of this page.
    pub uploads: Vec<Upload>,
    /// `(NextKeyMarker, NextUploadIdMarker)` when the listing is truncated.
    pub next: Option<(String, String)>,
}

/// Parses a ListMultipartUploads page. Anything that is not one whole
/// `<ListMultipartUploadsResult>` is an error; a truncated page without
/// markers is an error too (it would list the same page for ever).
pub fn parse_uploads(xml: &[u8]) -> Result<UploadsPage, String> {
    let mut page = UploadsPage::default();
    let mut upload = Upload::default();
    let (mut truncated, mut next_key, mut next_id) = (false, String::new(), String::new());
    let mut root = None;
    walk(xml, |path, text| {
        if path.len() == 1 {
            root = Some(path[0].to_string());
        }
        match path {
            ["ListMultipartUploadsResult", "Upload", "Key"] => upload.key = text,
            ["ListMultipartUploadsResult", "Upload", "UploadId"] => upload.id = text,
            ["ListMultipartUploadsResult", "Upload", "Initiated"] => upload.initiated = text,
            ["ListMultipartUploadsResult", "Upload"] => {
                page.uploads.push(std::mem::take(&mut upload))
            }
            ["ListMultipartUploadsResult", "IsTruncated"] => truncated = text == "true",
            ["ListMultipartUploadsResult", "NextKeyMarker"] => next_key = text,
            ["ListMultipartUploadsResult", "NextUploadIdMarker"] => next_id = text,
            _ => {}
        }
    })?;
    if root.as_deref() != Some("ListMultipartUploadsResult") {
        return Err("expected a ListMultipartUploadsResult document".into());
    }
    if truncated {
        if next_key.is_empty() && next_id.is_empty() {
            return Err("the upload listing is truncated but gives no markers".into());
        }
        page.next = Some((next_key, next_id));
    }
    Ok(page)
}

/// The credentials and expiration of an AssumeRoleWithWebIdentity answer.
/// Errors never quote the document (it holds secrets).
pub fn parse_sts_credentials(
    xml: &[u8],
) -> Result<(crate::s3::signer::Credentials, String), String> {
    let (mut id, mut secret, mut token, mut expiration) =
        (String::new(), String::new(), String::new(), String::new());
    walk(xml, |path, text| {
        if let [.., "Credentials", field] = path {
            match *field {
                "AccessKeyId" => id = text,
                "SecretAccessKey" => secret = text,
                "SessionToken" => token = text,
                "Expiration" => expiration = text,
                _ => {}
            }
        }
    })
    .map_err(|_| "the answer is not XML".to_string())?;
    if id.is_empty() || secret.is_empty() || expiration.is_empty() {
        return Err("the answer holds no credentials".into());
    }
    Ok((
        crate::s3::signer::Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: (!token.is_empty()).then_some(token),
        },
        expiration,
    ))
}

/// The `<Code>` of an STS `<ErrorResponse>`, or `""`.
pub fn parse_sts_error_code(xml: &[u8]) -> String {
    let mut code = String::new();
    let _ = walk(xml, |path, text| {
        if let [.., "Error", "Code"] = path {
            // Codes are identifiers; anything else is not shown.
            if text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
                code = text;
            }
        }
    });
    code
}

/// One key that a DeleteObjects request could not delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeleteFailure {
    /// The full key (with the store's prefix).
    pub key: String,
    /// S3's `<Code>`.
    pub code: String,
    /// S3's `<Message>`.
    pub message: String,
}

/// The body of a quiet DeleteObjects request (keys XML-escaped).
pub fn delete_request<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut body = String::from("<Delete><Quiet>true</Quiet>");
    for key in keys {
        body.push_str("<Object><Key>");
        body.push_str(&quick_xml::escape::escape(key));
        body.push_str("</Key></Object>");
    }
    body.push_str("</Delete>");
    body
}

/// Parses a DeleteObjects result: the keys that failed. Anything but a
/// `<DeleteResult>` document is an error, never an empty list of failures.
pub fn parse_delete_result(xml: &[u8]) -> Result<Vec<DeleteFailure>, String> {
    let mut failures: Vec<DeleteFailure> = Vec::new();
    let mut current = DeleteFailure::default();
    let mut is_result = false;
    walk(xml, |path, text| match path {
        ["DeleteResult", "Error", "Key"] => current.key = text,
        ["DeleteResult", "Error", "Code"] => current.code = text,
        ["DeleteResult", "Error", "Message"] => current.message = text,
        ["DeleteResult", "Error"] => failures.push(std::mem::take(&mut current)),
        ["DeleteResult"] => is_result = true,
        _ => {}
    })?;
    if is_result {
        Ok(failures)
    } else {
        Err("the answer is not a DeleteResult document".into())
    }
}

/// The `<ETag>` of an UploadPartCopy answer.
pub fn parse_copy_part_etag(xml: &[u8]) -> Result<String, String> {
    let mut etag = None;
    walk(xml, |path, text| {
        if path == ["CopyPartResult", "ETag"] {
            etag = Some(text);
        }
    })?;
    etag.ok_or_else(|| "expected a CopyPartResult with an ETag".into())
}

/// Calls `on_text(element path, decoded text)` for each text node.
pub(super) fn walk(xml: &[u8], mut on_text: impl FnMut(&[&str], String)) -> Result<(), String> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
            }
            Ok(Event::Text(t)) => {
                let raw = t.decode().map_err(|e| e.to_string())?;
                let unescaped = quick_xml::escape::unescape(&raw).map_err(|e| e.to_string())?;
                text.push_str(&unescaped);
            }
            Ok(Event::GeneralRef(r)) => {
                let name = r.decode().map_err(|e| e.to_string())?;
                text.push_str(&resolve_entity(&name)?);
            }
            Ok(Event::CData(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(Event::End(_)) => {
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                on_text(&path, std::mem::take(&mut text));
                stack.pop();
            }
            Ok(Event::Empty(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let mut path: Vec<&str> = stack.iter().map(String::as_str).collect();
                path.push(&name);
                on_text(&path, String::new());
            }
            Ok(Event::Eof) if stack.is_empty() => return Ok(()),
            Ok(Event::Eof) => {
                return Err(format!(
                    "the document ends before </{}>",
                    stack.last().map(String::as_str).unwrap_or_default()
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn resolve_entity(name: &str) -> Result<String, String> {
    let s = match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                u32::from_str_radix(hex, 16)
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse()
            } else {
                return Err(format!("unknown entity &{name};"));
            };
            let c = code
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad character reference &{name};"))?;
            return Ok(c.to_string());
        }
    };
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_success_answer_must_be_its_document() {
        let ok = b"<?xml version=\"1.0\"?><CopyObjectResult><ETag>\"a\"</ETag></CopyObjectResult>";
        assert_eq!(expect_document(ok, "CopyObjectResult"), Ok(()));
        let error = b"<Error><Code>InternalError</Code><Message>retry</Message></Error>";
        assert_eq!(
            expect_document(error, "CopyObjectResult").unwrap_err().code,
            "InternalError"
        );
        for bad in [
            &b""[..],
            b"<html><body>proxy</body></html>",
            b"<CopyObjectResult><ETag>cut",
            b"<Error><Message>no code</Message></Error>",
        ] {
            assert_eq!(
                expect_document(bad, "CopyObjectResult").unwrap_err().code,
                "MalformedXML",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn upload_pages_carry_their_markers() {
        let page = b"<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>\
            <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>\
            <Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>2026-12-01T00:00:00.000Z</Initiated></Upload>\
            </ListMultipartUploadsResult>";
        let parsed = parse_uploads(page).unwrap();
        assert_eq!(parsed.uploads.len(), 1);
        assert_eq!(parsed.uploads[0].initiated, "2026-12-01T00:00:00.000Z");
        assert_eq!(parsed.next, Some(("k2".into(), "u2".into())));
        let endless = b"<ListMultipartUploadsResult><IsTruncated>true</IsTruncated></ListMultipartUploadsResult>";
        assert!(parse_uploads(endless).is_err());
        assert!(parse_uploads(b"<html/>").is_err());
    }

    use super::*;

    #[test]
    fn parses_a_list_page_and_decodes_entities() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>a &amp; b &lt;c&gt; &apos;d&apos; &quot;e&quot;</Key><Size>1</Size></Contents>
  <Contents><Key>caf&#233;/&#x65E5;</Key><Size>2</Size></Contents>
  <NextContinuationToken>tok+/=</NextContinuationToken>
</ListBucketResult>"#;
        let page = parse_list(xml).unwrap();
        assert_eq!(page.keys, ["a & b <c> 'd' \"e\"", "café/日"]);
        assert!(page.is_truncated);
        assert_eq!(page.next_token.as_deref(), Some("tok+/="));
    }

    #[test]
    fn parses_aws_error_bodies() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let e = parse_error(xml);
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert!(e.message.starts_with("The request signature"));
        assert_eq!(parse_error(b"not xml at all").code, "");
    }

    #[test]
    fn an_empty_listing_has_no_keys() {
        let page =
            parse_list(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")
                .unwrap();
        assert!(page.keys.is_empty() && !page.is_truncated && page.next_token.is_none());
    }

    #[test]
    fn anything_but_a_whole_list_result_is_an_error() {
        for body in [
            &b"<html><body>502 Bad Gateway</body></html>"[..],
            b"",
            b"   ",
            b"<Error><Code>InternalError</Code><Message>x</Message></Error>",
            b"<ListBucketResult><Contents><Key>p/a</Key></Contents><Conten",
            b"<ListBucketResult><Contents><Key>p/a</Key></Contents><IsTruncated>true</IsTruncated></ListBucketResult>",
        ] {
            assert!(parse_list(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn delete_results_must_be_delete_results() {
        assert_eq!(parse_delete_result(b"<DeleteResult/>").unwrap(), []);
        let failed = parse_delete_result(
            b"<DeleteResult><Error><Key>a</Key><Code>AccessDenied</Code><Message>no</Message></Error></DeleteResult>",
        )
        .unwrap();
        assert_eq!(failed[0].key, "a");
        assert_eq!(failed[0].code, "AccessDenied");
        assert!(parse_delete_result(b"<html/>").is_err());
        assert!(parse_delete_result(b"<DeleteResult><Error><Key>a</Key>").is_err());
        assert_eq!(
            delete_request(["a&b", "<c>"].into_iter()),
            "<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>&lt;c&gt;</Key></Object></Delete>"
        );
    }
}
