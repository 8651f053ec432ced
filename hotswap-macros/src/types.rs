//! Which Rust types can cross the boundary, and how.
//!
//! Every supported type has an FFI-safe counterpart from `abi_stable`; the
//! conversions are generated inline, recursively, so they work for any
//! user type without coherence problems (a user type crosses as it is and
//! must derive `StableAbi`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type};

const SUPPORTED: &str = "supported types are integers, floats, `bool`, `char`, `()`, `&str`, `String`, `&[T]`, `Vec<T>`, `Option<T>`, `Result<T, E>`, tuples of up to 4 elements, and `#[repr(C)]` types that derive `abi_stable::StableAbi`";

/// Types whose FFI form is themselves.
const PRIMITIVES: &[&str] = &[
    "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize", "f32", "f64", "bool",
];

/// Well-known types that would otherwise be mistaken for user types.
const REFUSED: &[(&str, &str)] = &[
    (
        "u128",
        "128-bit integers have no stable C ABI; split into two `u64`",
    ),
    (
        "i128",
        "128-bit integers have no stable C ABI; split into two `u64`",
    ),
    ("str", "pass `&str` or `String`"),
    ("Box", "pass the value itself"),
    ("Rc", "pass the value itself"),
    ("Arc", "pass the value itself"),
    ("Cow", "pass `&str`/`String` or `&[T]`/`Vec<T>`"),
    ("HashMap", "pass a `Vec` of pairs"),
    ("BTreeMap", "pass a `Vec` of pairs"),
    ("HashSet", "pass a `Vec`"),
    ("BTreeSet", "pass a `Vec`"),
    ("VecDeque", "pass a `Vec`"),
    ("PathBuf", "pass the path as a `String`"),
    ("Path", "pass the path as a `&str`"),
    ("OsString", "pass a `String`"),
    ("Self", "name the type"),
    // abi_stable's own types own or borrow the memory of the side that made
    // them: one made by a module would dangle once its version unloads.
    (
        "RString",
        "use `String`: the boundary copies it into memory of the side that receives it",
    ),
    ("RStr", "use `&str` to pass text in, `String` to return it"),
    (
        "RVec",
        "use `Vec<T>`: the boundary copies it into memory of the side that receives it",
    ),
    (
        "RSlice",
        "use `&[T]` to pass a slice in, `Vec<T>` to return one",
    ),
    ("RBox", "pass the value itself"),
    ("RArc", "pass the value itself"),
    ("RCow", "use `String` or `Vec<T>`"),
    ("RHashMap", "use a `Vec` of pairs"),
    ("ROption", "use `Option<T>`"),
    ("RResult", "use `Result<T, E>`"),
    (
        "DynTrait",
        "trait objects keep a vtable in the module; pass plain data",
    ),
    ("RBoxError", "return `Result<T, String>`"),
    ("NonNull", "pointers cannot cross; pass plain data"),
];

/// Where a type appears: borrows may only be passed in, never returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Argument,
    Return,
}

/// A type that can cross, with its FFI form.
pub(crate) enum Carried {
    /// Crosses as it is: primitives, `()`, and user `StableAbi` types.
    Same {
        ty: Type,
        user: bool,
    },
    Char,
    Str,
    String,
    /// `&[T]` of a type that crosses as it is.
    Slice(Type),
    Vec(Box<Carried>),
    Option(Box<Carried>),
    Result(Box<Carried>, Box<Carried>),
    Tuple(Vec<Carried>),
    /// Cannot cross, and why; `check` refuses it before anything expands.
    Refused {
        ty: Type,
        why: String,
    },
}

impl Carried {
    /// Classifies `ty`; what cannot cross becomes [`Carried::Refused`],
    /// which `check` reports.
    pub(crate) fn classify(ty: &Type, position: Position) -> Self {
        match ty {
            Type::Paren(inner) => Self::classify(&inner.elem, position),
            Type::Group(inner) => Self::classify(&inner.elem, position),
            Type::Tuple(tuple) if tuple.elems.is_empty() => Self::Same {
                ty: ty.clone(),
                user: false,
            },
            Type::Tuple(tuple) if tuple.elems.len() <= 4 => Self::Tuple(
                tuple
                    .elems
                    .iter()
                    .map(|elem| Self::classify(elem, position))
                    .collect(),
            ),
            Type::Tuple(_) => Self::refused(
                ty,
                "tuples have at most 4 elements; use a struct that derives `abi_stable::StableAbi`",
            ),
            Type::Reference(reference) => {
                if position == Position::Return {
                    return Self::refused(ty, "a borrow cannot be returned, it would outlive the call; return `String` or `Vec<T>` instead");
                }
                if reference.mutability.is_some() {
                    return Self::refused(ty, "mutable references cannot cross; return the new value instead (to reach the module state, take `&mut` of the type `setup` returns as the first parameter)");
                }
                match &*reference.elem {
                    Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => Self::Str,
                    Type::Slice(slice) => match Self::classify(&slice.elem, position) {
                        Self::Same { ty, .. } => Self::Slice(ty),
                        refused @ Self::Refused { .. } => refused,
                        _ => Self::refused(ty, "slices can only hold types that cross as they are (integers, floats, `bool`, `StableAbi` types); pass a `Vec` instead"),
                    },
                    _ => Self::refused(ty, "only `&str` and `&[T]` can be borrowed across; pass the value itself (to reach the module state, take `&` of the type `setup` returns as the first parameter)"),
                }
            }
            Type::Path(path) if path.qself.is_none() => {
                Self::classify_path(ty, &path.path, position)
            }
            Type::BareFn(_) => Self::refused(
                ty,
                "a function pointer returned by a module would point into it after its version unloads, and one passed in is a callback the types cannot check; pass plain data (a host callback can be a field of a `#[repr(C)]` `StableAbi` argument)",
            ),
            Type::Ptr(_) => Self::refused(
                ty,
                "raw pointers cannot cross: what they point to may be freed or unloaded; pass the data itself",
            ),
            _ => Self::refused(
                ty,
                "only named types, tuples, `&str` and `&[T]` can cross",
            ),
        }
    }

    fn classify_path(ty: &Type, path: &syn::Path, position: Position) -> Self {
        let last = path.segments.last().expect("a path has a segment");
        let name = last.ident.to_string();
        let args = generic_types(&last.arguments);
        if let Some((_, hint)) = REFUSED.iter().find(|(refused, _)| *refused == name) {
            return Self::refused(ty, hint);
        }
        if name.ends_with("_TO") {
            return Self::refused(ty, "`#[sabi_trait]` objects keep a vtable in the module that made them, which would dangle once its version unloads; pass plain data");
        }
        let bare = matches!(last.arguments, PathArguments::None);
        match (name.as_str(), args.as_slice()) {
            (primitive, _) if bare && PRIMITIVES.contains(&primitive) => Self::Same {
                ty: ty.clone(),
                user: false,
            },
            ("char", _) if bare => Self::Char,
            ("String", _) if bare => Self::String,
            ("Vec", [elem]) => Self::Vec(Box::new(Self::classify(elem, position))),
            ("Option", [elem]) => Self::Option(Box::new(Self::classify(elem, position))),
            ("Result", [ok, err]) => Self::Result(
                Box::new(Self::classify(ok, position)),
                Box::new(Self::classify(err, position)),
            ),
            ("Vec" | "Option" | "Result", _) => Self::refused(
                ty,
                &format!("write `{name}` with its type arguments spelled out"),
            ),
            _ => Self::Same {
                ty: ty.clone(),
                user: true,
            },
        }
    }

    fn refused(ty: &Type, why: &str) -> Self {
        Self::Refused {
            ty: ty.clone(),
            why: why.to_owned(),
        }
    }

    /// The first part of this type that cannot cross, explained on its span.
    pub(crate) fn refusal(&self) -> Option<syn::Error> {
        match self {
            Self::Refused { ty, why } => {
                let shown = crate::parse::pretty(ty);
                Some(syn::Error::new_spanned(
                    ty,
                    format!(
                        "`{shown}` cannot cross the hot module boundary: {why}\nnote: {SUPPORTED}"
                    ),
                ))
            }
            Self::Vec(inner) | Self::Option(inner) => inner.refusal(),
            Self::Result(ok, err) => ok.refusal().or_else(|| err.refusal()),
            Self::Tuple(elems) => elems.iter().find_map(Self::refusal),
            _ => None,
        }
    }

    /// User types that must be checked for `StableAbi`.
    pub(crate) fn user_types<'a>(&'a self, out: &mut Vec<&'a Type>) {
        match self {
            Self::Same { ty, user: true } | Self::Slice(ty) => out.push(ty),
            Self::Vec(inner) | Self::Option(inner) => inner.user_types(out),
            Self::Result(ok, err) => {
                ok.user_types(out);
                err.user_types(out);
            }
            Self::Tuple(elems) => elems.iter().for_each(|elem| elem.user_types(out)),
            _ => {}
        }
    }

    /// The FFI-safe type, with borrows at `lifetime`.
    pub(crate) fn ffi_type(&self, lifetime: &TokenStream) -> TokenStream {
        let p = quote!(::hotswap_runtime::__private_0_1);
        match self {
            Self::Same { ty, .. } => ty.to_token_stream(),
            Self::Refused { .. } => unreachable!("`check` refuses it before anything expands"),
            Self::Char => quote!(::core::primitive::u32),
            Self::Str => quote!(#p::RStr<#lifetime>),
            Self::String => quote!(#p::RString),
            Self::Slice(ty) => quote!(#p::RSlice<#lifetime, #ty>),
            Self::Vec(inner) => {
                let inner = inner.ffi_type(lifetime);
                quote!(#p::RVec<#inner>)
            }
            Self::Option(inner) => {
                let inner = inner.ffi_type(lifetime);
                quote!(#p::ROption<#inner>)
            }
            Self::Result(ok, err) => {
                let (ok, err) = (ok.ffi_type(lifetime), err.ffi_type(lifetime));
                quote!(#p::RResult<#ok, #err>)
            }
            Self::Tuple(elems) => {
                let name = tuple_struct(elems.len());
                let elems = elems.iter().map(|elem| elem.ffi_type(lifetime));
                quote!(#p::#name<#(#elems),*>)
            }
        }
    }

    /// Converts the Rust value `value` into its FFI form.
    pub(crate) fn rust_to_ffi(&self, value: TokenStream, depth: usize) -> TokenStream {
        let p = quote!(::hotswap_runtime::__private_0_1);
        let x = format_ident!("__hotswap_x{depth}");
        match self {
            Self::Same { .. } => value,
            Self::Refused { .. } => unreachable!("`check` refuses it before anything expands"),
            Self::Char => quote!(#p::char_to_ffi(#value)),
            Self::Str => quote!(#p::RStr::from_str(#value)),
            Self::String => quote!(#p::RString::from(#value)),
            Self::Slice(_) => quote!(#p::RSlice::from_slice(#value)),
            Self::Vec(inner) if inner.is_same() => quote!(#p::RVec::from(#value)),
            Self::Vec(inner) => {
                let convert = inner.rust_to_ffi(quote!(#x), depth + 1);
                quote!(::core::iter::Iterator::collect::<#p::RVec<_>>(::core::iter::Iterator::map(::core::iter::IntoIterator::into_iter(#value), |#x| #convert)))
            }
            Self::Option(inner) => {
                let convert = inner.rust_to_ffi(quote!(#x), depth + 1);
                quote!(#p::ROption::from(::core::option::Option::map(#value, |#x| #convert)))
            }
            Self::Result(ok, err) => {
                let ok = ok.rust_to_ffi(quote!(#x), depth + 1);
                let err = err.rust_to_ffi(quote!(#x), depth + 1);
                quote!(#p::RResult::from(::core::result::Result::map_err(::core::result::Result::map(#value, |#x| #ok), |#x| #err)))
            }
            Self::Tuple(elems) => {
                let name = tuple_struct(elems.len());
                let vars: Vec<_> = (0..elems.len())
                    .map(|i| format_ident!("__hotswap_t{depth}_{i}"))
                    .collect();
                let converted = elems
                    .iter()
                    .zip(&vars)
                    .map(|(elem, var)| elem.rust_to_ffi(quote!(#var), depth + 1));
                quote!({ let (#(#vars,)*) = #value; #p::#name(#(#converted),*) })
            }
        }
    }

    /// Converts the FFI value `value` back into the Rust type.
    pub(crate) fn ffi_to_rust(&self, value: TokenStream, depth: usize) -> TokenStream {
        let p = quote!(::hotswap_runtime::__private_0_1);
        let x = format_ident!("__hotswap_x{depth}");
        match self {
            Self::Same { .. } => value,
            Self::Refused { .. } => unreachable!("`check` refuses it before anything expands"),
            Self::Char => quote!(#p::char_from_ffi(#value)),
            Self::Str => quote!(#p::RStr::as_str(&#value)),
            Self::String => quote!(#p::string_from_ffi(#value)),
            Self::Slice(_) => quote!(#p::RSlice::as_slice(&#value)),
            Self::Vec(inner) if inner.is_same() => quote!(#p::vec_from_ffi(#value)),
            Self::Vec(inner) => {
                let convert = inner.ffi_to_rust(quote!(#x), depth + 1);
                quote!(::core::iter::Iterator::collect::<::std::vec::Vec<_>>(::core::iter::Iterator::map(::core::iter::IntoIterator::into_iter(#value), |#x| #convert)))
            }
            Self::Option(inner) => {
                let convert = inner.ffi_to_rust(quote!(#x), depth + 1);
                quote!(::core::option::Option::map(#p::ROption::into_option(#value), |#x| #convert))
            }
            Self::Result(ok, err) => {
                let ok = ok.ffi_to_rust(quote!(#x), depth + 1);
                let err = err.ffi_to_rust(quote!(#x), depth + 1);
                quote!(::core::result::Result::map_err(::core::result::Result::map(#p::RResult::into_result(#value), |#x| #ok), |#x| #err))
            }
            Self::Tuple(elems) => {
                let name = tuple_struct(elems.len());
                let vars: Vec<_> = (0..elems.len())
                    .map(|i| format_ident!("__hotswap_t{depth}_{i}"))
                    .collect();
                let converted = elems
                    .iter()
                    .zip(&vars)
                    .map(|(elem, var)| elem.ffi_to_rust(quote!(#var), depth + 1));
                quote!({ let #p::#name(#(#vars),*) = #value; (#(#converted,)*) })
            }
        }
    }

    fn is_same(&self) -> bool {
        matches!(self, Self::Same { .. })
    }

    /// Whether the value borrows from its caller (`&str`, `&[T]`, `&T`).
    pub(crate) fn borrows(&self) -> bool {
        match self {
            Self::Str | Self::Slice(_) => true,
            Self::Same { ty, .. } => matches!(ty, Type::Reference(_)),
            Self::Vec(inner) | Self::Option(inner) => inner.borrows(),
            Self::Result(ok, err) => ok.borrows() || err.borrows(),
            Self::Tuple(elems) => elems.iter().any(Self::borrows),
            Self::Char | Self::String | Self::Refused { .. } => false,
        }
    }

    /// The owned type to take instead of a borrowed one, for messages.
    pub(crate) fn owned_hint(&self) -> String {
        match self {
            Self::Str => "String".to_owned(),
            Self::Slice(ty) => format!("Vec<{}>", crate::parse::pretty(ty)),
            _ => "an owned value (`String`, `Vec<T>`, a `Copy` type)".to_owned(),
        }
    }
}

/// `StableAbi` assertions, each on the span of the type it checks.
pub(crate) fn assert_user_types(types: &[&Type]) -> TokenStream {
    types
        .iter()
        .map(
            |ty| quote_spanned!(ty.span()=> ::hotswap_runtime::__private_0_1::assert_crosses::<#ty>();),
        )
        .collect()
}

fn tuple_struct(len: usize) -> syn::Ident {
    format_ident!("Tuple{len}")
}

fn generic_types(arguments: &PathArguments) -> Vec<&Type> {
    match arguments {
        PathArguments::AngleBracketed(angle) => angle
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
