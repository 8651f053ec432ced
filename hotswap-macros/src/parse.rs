//! Reads an annotated module into a [`Module`] model.

use proc_macro2::TokenStream;
use quote::{format_ident, ToTokens};
use syn::{FnArg, GenericParam, Ident, Item, ItemFn, ItemMod, Pat, ReturnType, Type, Visibility};

use crate::types::{Carried, Position};

/// Functions with more parameters than this cannot be described to
/// `abi_stable` (its layouts of `PhantomData<(..)>` stop at 16 types,
/// one of which is the return type).
const MAX_PARAMS: usize = 15;

/// An annotated module, understood.
pub(crate) struct Module {
    pub ident: Ident,
    pub lifecycle: Option<Lifecycle>,
    pub functions: Vec<Function>,
}

/// The module's `setup`/`teardown`.
pub(crate) struct Lifecycle {
    /// What `setup` returns (inside `Result` if it is fallible).
    pub state: Type,
    /// What `teardown` returns and `setup` receives; `None` when nothing is
    /// handed over.
    pub handoff: Option<Type>,
    pub setup_takes_prev: bool,
    pub setup_fallible: bool,
    pub has_teardown: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    None,
    Shared,
    Exclusive,
}

/// An exported function.
pub(crate) struct Function {
    pub ident: Ident,
    pub receiver: Receiver,
    pub params: Vec<Param>,
    /// `None` for `()`.
    pub ret: Option<Carried>,
    pub ret_type: Option<Type>,
    /// The Rust signature, for error messages at load time.
    pub signature: String,
    /// Its doc comments, repeated on the host's accessor.
    pub docs: Vec<syn::Attribute>,
}

pub(crate) struct Param {
    pub name: Ident,
    pub ty: Type,
    pub carried: Carried,
}

/// Parses the attribute's input. On failure returns every error found.
pub(crate) fn parse(args: TokenStream, item: &ItemMod) -> Result<Module, Vec<syn::Error>> {
    let mut errors = Vec::new();
    if !args.is_empty() {
        errors.push(syn::Error::new_spanned(
            &args,
            "`#[hot_module]` takes no arguments",
        ));
    }
    let Some((_, items)) = &item.content else {
        errors.push(syn::Error::new_spanned(
            item,
            "`#[hot_module]` needs the module's items inline: write `pub mod name { ... }` instead of `mod name;`",
        ));
        return Err(errors);
    };
    let fns: Vec<&ItemFn> = items
        .iter()
        .filter_map(|item| match item {
            Item::Fn(function) => Some(function),
            _ => None,
        })
        .collect();
    let find = |name: &str| {
        fns.iter()
            .copied()
            .find(|function| function.sig.ident == name)
    };
    let lifecycle = lifecycle(find("setup"), find("teardown"), &mut errors);
    let state = lifecycle
        .as_ref()
        .map(|lifecycle| type_key(&lifecycle.state));
    let mut functions = Vec::new();
    for function in fns {
        let name = function.sig.ident.to_string();
        if name == "setup" || name == "teardown" || !matches!(function.vis, Visibility::Public(_)) {
            continue;
        }
        match exported(function, state.as_deref()) {
            Ok(function) => functions.push(function),
            Err(mut found) => errors.append(&mut found),
        }
    }
    if errors.is_empty() {
        Ok(Module {
            ident: item.ident.clone(),
            lifecycle,
            functions,
        })
    } else {
        Err(errors)
    }
}

/// Types are compared by their tokens: `State` and `self::State` differ.
fn type_key(ty: &Type) -> String {
    pretty(ty)
}

/// Tokens as a person would write them: `&mut Vec<u8>`, not `& mut Vec < u8 >`.
pub(crate) fn pretty(tokens: &impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (spaced, tight) in [
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        ("& ", "&"),
        (" :: ", "::"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

fn lifecycle(
    setup: Option<&ItemFn>,
    teardown: Option<&ItemFn>,
    errors: &mut Vec<syn::Error>,
) -> Option<Lifecycle> {
    for function in [setup, teardown].into_iter().flatten() {
        if !matches!(function.vis, Visibility::Public(_)) {
            errors.push(syn::Error::new_spanned(
                &function.sig.ident,
                format!(
                    "`{}` must be `pub` so the runtime can call it",
                    function.sig.ident
                ),
            ));
        }
        reject_signature_features(function, errors);
    }
    let Some(setup) = setup else {
        if let Some(teardown) = teardown {
            errors.push(syn::Error::new_spanned(
                &teardown.sig.ident,
                "`teardown` without `setup`: add `pub fn setup(prev: Option<T>) -> State`, whose return type is the module state",
            ));
        }
        return None;
    };
    let ReturnType::Type(_, returned) = &setup.sig.output else {
        errors.push(syn::Error::new_spanned(
            &setup.sig,
            "`setup` must return the module state: `pub fn setup(prev: Option<T>) -> State`",
        ));
        return None;
    };
    let (state, setup_fallible) = match single_generic(returned, "Result", 2) {
        Some(ok) => (ok.clone(), true),
        None => ((**returned).clone(), false),
    };
    let prev = match setup.sig.inputs.len() {
        0 => None,
        1 => match &setup.sig.inputs[0] {
            FnArg::Typed(typed) => match single_generic(&typed.ty, "Option", 1) {
                Some(inner) => Some(inner.clone()),
                None => {
                    errors.push(syn::Error::new_spanned(
                        &typed.ty,
                        "`setup` receives the previous version's handoff as `Option<T>` (`None` on first load)",
                    ));
                    return None;
                }
            },
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "`setup` is a free function; remove `self`",
                ));
                return None;
            }
        },
        _ => {
            errors.push(syn::Error::new_spanned(
                &setup.sig.inputs,
                "`setup` takes at most one parameter, `prev: Option<T>`",
            ));
            return None;
        }
    };
    let handoff = match teardown {
        Some(teardown) => {
            let takes_state = teardown.sig.inputs.len() == 1
                && matches!(&teardown.sig.inputs[0], FnArg::Typed(typed) if type_key(&typed.ty) == type_key(&state));
            if !takes_state {
                errors.push(syn::Error::new_spanned(
                    &teardown.sig.inputs,
                    format!("`teardown` takes the module state by value: `pub fn teardown(state: {}) -> T`", type_key(&state)),
                ));
            }
            let ReturnType::Type(_, handoff) = &teardown.sig.output else {
                errors.push(syn::Error::new_spanned(
                    &teardown.sig,
                    "`teardown` returns the value handed to the next version's `setup`; return the state itself if nothing needs converting",
                ));
                return None;
            };
            if let Some(prev) = &prev {
                if type_key(prev) != type_key(handoff) {
                    errors.push(syn::Error::new_spanned(
                        handoff,
                        format!("`teardown` returns `{}` but `setup` receives `Option<{}>`: what teardown returns is what setup gets, so they must match", type_key(handoff), type_key(prev)),
                    ));
                }
            }
            Some((**handoff).clone())
        }
        None => match &prev {
            Some(prev) if type_key(prev) != type_key(&state) => {
                errors.push(syn::Error::new_spanned(
                    &setup.sig.ident,
                    format!("`setup` receives `Option<{}>` but returns `{}`: add `pub fn teardown(state: {}) -> {}` to convert one into the other", type_key(prev), type_key(&state), type_key(&state), type_key(prev)),
                ));
                None
            }
            Some(prev) => Some(prev.clone()),
            None => None,
        },
    };
    Some(Lifecycle {
        state,
        handoff,
        setup_takes_prev: prev.is_some(),
        setup_fallible,
        has_teardown: teardown.is_some(),
    })
}

/// `Name<A, ..>` with `count` type arguments: the first of them.
fn single_generic<'a>(ty: &'a Type, name: &str, count: usize) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            syn::GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    (types.len() == count).then(|| types[0])
}

/// Refuses what an exported (or lifecycle) function cannot be.
fn reject_signature_features(function: &ItemFn, errors: &mut Vec<syn::Error>) {
    let sig = &function.sig;
    if let Some(asyncness) = &sig.asyncness {
        errors.push(syn::Error::new_spanned(
            asyncness,
            "hot module functions cannot be `async`: a future would hold code of a version that may be unloaded; make it synchronous and let the host drive async work",
        ));
    }
    if let Some(param) = sig
        .generics
        .params
        .iter()
        .find(|param| !matches!(param, GenericParam::Lifetime(_)))
    {
        errors.push(syn::Error::new_spanned(
            param,
            "hot module functions cannot be generic: a generic function has no single compiled form to export; write one function per concrete type",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "hot module functions cannot be `unsafe`; keep the `unsafe` inside a safe function",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(abi, "write hot module functions as plain Rust functions; `#[hot_module]` generates the `extern \"C\"` shims"));
    }
}

fn exported(function: &ItemFn, state: Option<&str>) -> Result<Function, Vec<syn::Error>> {
    let mut errors = Vec::new();
    reject_signature_features(function, &mut errors);
    let sig = &function.sig;
    let mut receiver = Receiver::None;
    let mut params = Vec::new();
    let mut shown = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let typed = match input {
            FnArg::Typed(typed) => typed,
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "hot module functions are free functions; remove `self`",
                ));
                continue;
            }
        };
        if index == 0 {
            if let (Type::Reference(reference), Some(state)) = (&*typed.ty, state) {
                if type_key(&reference.elem) == state {
                    receiver = if reference.mutability.is_some() {
                        Receiver::Exclusive
                    } else {
                        Receiver::Shared
                    };
                    shown.push(pretty(&typed.ty));
                    continue;
                }
            }
        }
        let name = match &*typed.pat {
            Pat::Ident(ident) if ident.subpat.is_none() => ident.ident.clone(),
            _ => format_ident!("__hotswap_arg{index}"),
        };
        shown.push(format!("{}: {}", name, pretty(&typed.ty)));
        match Carried::classify(&typed.ty, Position::Argument) {
            Ok(carried) => params.push(Param {
                name,
                ty: (*typed.ty).clone(),
                carried,
            }),
            Err(error) => errors.push(error),
        }
    }
    if params.len() > MAX_PARAMS {
        errors.push(syn::Error::new_spanned(
            &sig.inputs,
            format!("hot module functions take at most {MAX_PARAMS} parameters besides the state; group them in a struct that derives `abi_stable::StableAbi`"),
        ));
    }
    let (ret, ret_type) = match &sig.output {
        ReturnType::Default => (None, None),
        ReturnType::Type(_, ty) => match Carried::classify(ty, Position::Return) {
            Ok(carried) => (Some(carried), Some((**ty).clone())),
            Err(error) => {
                errors.push(error);
                (None, None)
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let arrow = ret_type
        .as_ref()
        .map(|ty| format!(" -> {}", pretty(ty)))
        .unwrap_or_default();
    let signature = format!("fn {}({}){arrow}", sig.ident, shown.join(", "));
    let docs = function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Function {
        ident: sig.ident.clone(),
        receiver,
        params,
        ret,
        ret_type,
        signature,
        docs,
    })
}
