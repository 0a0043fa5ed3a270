//! The MD5 challenge login: `Action: Challenge` + `AuthType: MD5` answers
//! `Challenge: <n>`, then `Action: Login` + `AuthType: MD5` carries
//! `Key: md5hex(challenge + secret)` instead of the secret.

use md5::{Digest, Md5};

/// The `Key:` of an MD5 login: the lowercase hex MD5 of `challenge` immediately
/// followed by `secret` (Asterisk's `authenticate()` compares it to
/// `MD5(challenge + secret)` with `strcasecmp`, so the case does not matter to it).
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(challenge.as_bytes());
    md5.update(secret.as_bytes());
    let digest = md5.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(32);
    for byte in digest.iter() {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_1321_test_suite() {
        // RFC 1321 appendix A.5, split between "challenge" and "secret" at several
        // points: the key is the MD5 of the concatenation.
        let vectors = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, digest) in vectors {
            for split in [0, input.len() / 2, input.len()] {
                let (challenge, secret) = input.split_at(split);
                assert_eq!(md5_key(challenge, secret), digest, "{input:?} at {split}");
            }
        }
    }

    #[test]
    fn key_for_the_captured_challenge() {
        // asterisk16-md5.bin answered `Challenge: 942327271`; the lab's secret (in
        // the asterisk22 .sent captures) is amp111. Digests computed independently
        // (Python hashlib): md5(b"942327271amp111"), md5(b"942327271secret").
        assert_eq!(
            md5_key("942327271", "amp111"),
            "20faf2355ab676d923a0ddf11b6e7808"
        );
        assert_eq!(
            md5_key("942327271", "secret"),
            "33af22d540bb93b441beba27cb1d524e"
        );
    }
}
