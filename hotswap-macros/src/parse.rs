//! Reads an annotated module into a [`Module`] model: syn types, no tokens.
//! It refuses only what leaves nothing to model; every other refusal is
//! `check`'s, so this stage describes what was written, good or bad.

use proc_macro2::TokenStream;
use quote::{format_ident, ToTokens};
use syn::{FnArg, Ident, Item, ItemFn, ItemMod, Pat, ReturnType, Type, Visibility};

use crate::ctxt::Ctxt;
use crate::types::{Carried, Position};

/// An annotated module, understood.
pub(crate) struct Module<'a> {
    pub ident: &'a Ident,
    /// Everything in the module as written, for `check`.
    pub items: &'a [Item],
    pub setup: Option<&'a ItemFn>,
    pub teardown: Option<&'a ItemFn>,
    /// `None` without a `setup` that returns a state.
    pub lifecycle: Option<Lifecycle>,
    pub functions: Vec<Function<'a>>,
    /// What the module calls outside itself (the attribute's arguments).
    pub uses: Uses,
}

/// The attribute's arguments: `uses(path::to::module, ...)` and
/// `services(Type, ...)`.
#[derive(Default)]
pub(crate) struct Uses {
    /// Other hot modules this one calls, by path.
    pub modules: Vec<syn::Path>,
    /// Host services this one calls, by type.
    pub services: Vec<Type>,
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

/// An exported function: every `pub fn` but `setup` and `teardown`.
pub(crate) struct Function<'a> {
    pub item: &'a ItemFn,
    pub ident: &'a Ident,
    pub receiver: Receiver,
    /// The parameters besides the state, in order.
    pub params: Vec<Param>,
    /// `None` for `()`.
    pub ret: Option<Carried>,
    pub ret_type: Option<&'a Type>,
    /// The Rust signature, for error messages at load time.
    pub signature: String,
    /// Its doc comments, repeated on the host's accessor.
    pub docs: Vec<&'a syn::Attribute>,
    /// Whether it is an `async fn`: it returns a future across the boundary.
    pub is_async: bool,
}

pub(crate) struct Param {
    pub name: Ident,
    pub ty: Type,
    pub carried: Carried,
}

/// Models the attribute's input; `None` (with the reason reported) when
/// there is nothing to model.
pub(crate) fn parse<'a>(cx: &Ctxt, args: &TokenStream, item: &'a ItemMod) -> Option<Module<'a>> {
    let uses = uses(cx, args);
    let Some((_, items)) = &item.content else {
        cx.error_spanned_by(
            item,
            "`#[hot_module]` needs the module's items inline: write `pub mod name { ... }` instead of `mod name;`",
        );
        return None;
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
    let (setup, teardown) = (find("setup"), find("teardown"));
    let lifecycle = setup.and_then(|setup| lifecycle(setup, teardown));
    let state = lifecycle
        .as_ref()
        .map(|lifecycle| type_key(&lifecycle.state));
    let functions = fns
        .into_iter()
        .filter(|function| {
            let name = function.sig.ident.to_string();
            name != "setup" && name != "teardown" && matches!(function.vis, Visibility::Public(_))
        })
        .map(|function| exported(function, state.as_deref()))
        .collect();
    Some(Module {
        ident: &item.ident,
        items,
        setup,
        teardown,
        lifecycle,
        functions,
        uses,
    })
}

const ARGUMENTS: &str = "`#[hot_module]` takes `uses(path::to::module, ...)`, the other hot modules this one calls, and `services(Type, ...)`, the host services it calls";

/// Reads `uses(...)` and `services(...)`; whatever else is written is
/// reported and left out.
fn uses(cx: &Ctxt, args: &TokenStream) -> Uses {
    use syn::parse::Parser;
    use syn::punctuated::Punctuated;
    use syn::Token;

    let mut uses = Uses::default();
    let mut seen: Vec<String> = Vec::new();
    let parser = syn::meta::parser(|meta| {
        let key = meta.path.get_ident().map(ToString::to_string);
        if let Some(key) = &key {
            if seen.contains(key) {
                return Err(meta.error(format!(
                    "`{key}(...)` is given twice; list everything in one"
                )));
            }
            seen.push(key.clone());
        }
        let content;
        match key.as_deref() {
            Some("uses") => {
                syn::parenthesized!(content in meta.input);
                uses.modules
                    .extend(Punctuated::<syn::Path, Token![,]>::parse_terminated(
                        &content,
                    )?);
            }
            Some("services") => {
                syn::parenthesized!(content in meta.input);
                uses.services
                    .extend(Punctuated::<Type, Token![,]>::parse_terminated(&content)?);
            }
            _ => return Err(meta.error(format!("unknown argument: {ARGUMENTS}"))),
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args.clone()) {
        cx.syn_error(error);
    }
    uses
}

/// Types are compared by their tokens: `State` and `self::State` differ.
pub(crate) fn type_key(ty: &Type) -> String {
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

/// What `setup` and `teardown` say about the state, read as leniently as
/// possible: `check` refuses the shapes that do not fit.
fn lifecycle(setup: &ItemFn, teardown: Option<&ItemFn>) -> Option<Lifecycle> {
    let ReturnType::Type(_, returned) = &setup.sig.output else {
        return None;
    };
    let (state, setup_fallible) = match single_generic(returned, "Result", 2) {
        Some(ok) => (ok.clone(), true),
        None => ((**returned).clone(), false),
    };
    let handoff = match teardown {
        Some(teardown) => match &teardown.sig.output {
            ReturnType::Type(_, handoff) => Some((**handoff).clone()),
            ReturnType::Default => None,
        },
        None => setup_prev(setup).cloned(),
    };
    Some(Lifecycle {
        state,
        handoff,
        setup_takes_prev: !setup.sig.inputs.is_empty(),
        setup_fallible,
        has_teardown: teardown.is_some(),
    })
}

/// `T` of `setup(prev: Option<T>)`.
pub(crate) fn setup_prev(setup: &ItemFn) -> Option<&Type> {
    match setup.sig.inputs.first()? {
        FnArg::Typed(typed) => single_generic(&typed.ty, "Option", 1),
        FnArg::Receiver(_) => None,
    }
}

/// `Name<A, ..>` with `count` type arguments: the first of them.
pub(crate) fn single_generic<'a>(ty: &'a Type, name: &str, count: usize) -> Option<&'a Type> {
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

fn exported<'a>(function: &'a ItemFn, state: Option<&str>) -> Function<'a> {
    let sig = &function.sig;
    let mut receiver = Receiver::None;
    let mut params = Vec::new();
    let mut shown = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        // `check` refuses `self`.
        let FnArg::Typed(typed) = input else { continue };
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
        params.push(Param {
            name,
            ty: (*typed.ty).clone(),
            carried: Carried::classify(&typed.ty, Position::Argument),
        });
    }
    let (ret, ret_type) = match &sig.output {
        ReturnType::Default => (None, None),
        ReturnType::Type(_, ty) => (Some(Carried::classify(ty, Position::Return)), Some(&**ty)),
    };
    let arrow = ret_type
        .map(|ty| format!(" -> {}", pretty(ty)))
        .unwrap_or_default();
    let asyncness = if sig.asyncness.is_some() {
        "async "
    } else {
        ""
    };
    let signature = format!("{asyncness}fn {}({}){arrow}", sig.ident, shown.join(", "));
    let docs = function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .collect();
    Function {
        item: function,
        ident: &sig.ident,
        receiver,
        params,
        ret,
        ret_type,
        signature,
        docs,
        is_async: sig.asyncness.is_some(),
    }
}
