//! Decoders: one SQS message body in, one [`crate::change::Decoded`] or a classified error out.
