//! Command-line value types: `clap::ValueEnum` for the library's enums that command-line options
//! take, so `--help` lists their values, a wrong value is refused by clap with the allowed ones,
//! and each option's default is the enum's own `Default` (defined once, next to the type).
//!
//! The impls live here (the library crate) because Rust allows a foreign trait's impl only in
//! the crate that defines the type; `main.rs` only names the types. Each name is the one the
//! enum's own parser (`FromStr`, serde) accepts; a test checks that for every variant.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::dedup::Step;
use crate::infer::model::DTypeChoice;
use crate::tokenize::Engine;
use crate::train::config::{ComputeDtype, DeviceKind};
use crate::train::dist::DistMode;

/// `impl ValueEnum for TYPE { Variant => "name" | "alias", … }`.
macro_rules! value_enum {
    ($ty:ident { $($variant:ident => $name:literal $(| $alias:literal)*),+ $(,)? }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($ty::$variant),+]
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($ty::$variant => PossibleValue::new($name)$(.alias($alias))*,)+
                })
            }
        }
    };
}

value_enum!(Step { Signatures => "signatures", Buckets => "buckets", Cluster => "cluster", Filter => "filter" });
value_enum!(DeviceKind { Cpu => "cpu", Cuda => "cuda" });
value_enum!(ComputeDtype { F32 => "f32", Bf16 => "bf16" });
value_enum!(DistMode { Auto => "auto", None => "none", Ddp => "ddp", Zero1 => "zero1", Zero2 => "zero2" });
value_enum!(Engine { Auto => "auto", Hf => "hf", Fast => "fast" });
value_enum!(DTypeChoice { Auto => "auto", F32 => "f32" | "float32", Bf16 => "bf16" | "bfloat16", F16 => "f16" | "float16" });

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command-line name (and alias) is what the type's own parser gives for it.
    fn names_agree<T, E>(parse: impl Fn(&str) -> Result<T, E>)
    where
        T: ValueEnum + PartialEq + std::fmt::Debug,
        E: std::fmt::Debug,
    {
        for v in T::value_variants() {
            let pv = v.to_possible_value().unwrap();
            for name in pv.get_name_and_aliases() {
                assert_eq!(&parse(name).unwrap(), v, "{name}");
                assert_eq!(&T::from_str(name, false).unwrap(), v, "{name}");
            }
        }
    }

    fn serde_parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
    }

    #[test]
    fn command_line_names_are_the_types_own_names() {
        names_agree::<Step, _>(str::parse);
        names_agree::<DeviceKind, _>(str::parse);
        names_agree::<DeviceKind, _>(serde_parse);
        names_agree::<ComputeDtype, _>(str::parse);
        names_agree::<ComputeDtype, _>(serde_parse);
        names_agree::<DistMode, _>(serde_parse);
        names_agree::<Engine, _>(serde_parse);
        names_agree::<DTypeChoice, _>(str::parse);
        // The default each option shows is the type's own.
        assert_eq!(DeviceKind::default().to_possible_value().unwrap().get_name(), "cpu");
        assert_eq!(DTypeChoice::default().to_possible_value().unwrap().get_name(), "auto");
    }
}
