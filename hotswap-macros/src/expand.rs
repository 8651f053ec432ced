//! Writes what `#[hot_module]` adds to the module: the exported header and
//! shims (used when the crate is built as a `cdylib`) and the host's typed
//! accessors `Hot` and `HotGuard` (used when a host links it as an `rlib`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};

use crate::parse::{Function, Lifecycle, Module, Receiver};
use crate::types;

/// The names generated items take in the module, which user items must not.
const MODULE_NAMES: &[&str] = &["Hot", "HotGuard", "HotLink", "__HotModule", "__HotTable"];

/// Every name `generate` adds to the module's namespace (items inside
/// `const _` have none), for `check` to refuse clashes with.
pub(crate) fn generated_names(module: &Module) -> Vec<String> {
    let mut names: Vec<String> = MODULE_NAMES.iter().map(|name| (*name).to_owned()).collect();
    for function in &module.functions {
        names.push(marker(function).to_string());
        names.push(shim(function).to_string());
    }
    names
}

/// What `#[hot_module]` adds to a module that passed `check`.
pub(crate) fn generate(module: &Module) -> TokenStream {
    let p = quote!(::hotswap_runtime::__private_0_1);
    let module_name = module.ident.to_string();
    // Cargo sets this for the crate being compiled; the host computes the
    // same symbol from the same expansion.
    let crate_name =
        std::env::var("CARGO_CRATE_NAME").unwrap_or_else(|_| "unknown_crate".to_owned());
    let symbol = format!("__hotswap_module__{crate_name}__{module_name}");
    let state = module.lifecycle.as_ref().map(|lifecycle| &lifecycle.state);

    let functions: Vec<TokenStream> = module
        .functions
        .iter()
        .map(|function| describe(function, state))
        .collect();
    let markers: Vec<_> = module.functions.iter().map(marker).collect();
    let names: Vec<_> = module
        .functions
        .iter()
        .map(|function| &function.ident)
        .collect();
    let entries = module.functions.iter().map(|function| {
        let (marker, shim) = (marker(function), shim(function));
        let constructor = match function.receiver {
            Receiver::None => quote!(stateless),
            Receiver::Shared => quote!(shared),
            Receiver::Exclusive => quote!(exclusive),
        };
        quote!(#p::FnEntry::#constructor::<#marker>(#shim as *const #p::c_void))
    });
    let count = module.functions.len();
    let methods = module.functions.iter().map(guard_method);
    let link_methods = module
        .functions
        .iter()
        .enumerate()
        .map(|(index, function)| link_method(function, index));
    let imports: Vec<TokenStream> = module
        .uses
        .modules
        .iter()
        .map(|path| quote_spanned!(syn::spanned::Spanned::span(path)=> <#path::__HotModule as #p::Linkable>::DESCRIPTOR))
        .collect();
    let import_count = imports.len();
    let services: Vec<TokenStream> = module
        .uses
        .services
        .iter()
        .map(|ty| quote_spanned!(syn::spanned::Spanned::span(ty)=> #p::ServiceDecl::of::<#ty>()))
        .collect();
    let service_count = services.len();

    let mut user_types = Vec::new();
    for function in &module.functions {
        function
            .params
            .iter()
            .for_each(|param| param.carried.user_types(&mut user_types));
        if let Some(ret) = &function.ret {
            ret.user_types(&mut user_types);
        }
    }
    let user_type_checks = types::assert_user_types(&user_types);

    let (lifecycle, descriptor) = match &module.lifecycle {
        Some(lifecycle) => (
            lifecycle_impl(lifecycle),
            quote!(#p::ModuleDescriptor::stateful::<__HotModule>),
        ),
        None => (TokenStream::new(), quote!(#p::ModuleDescriptor::stateless)),
    };

    quote! {
        /// Marks this module for the hotswap runtime.
        #[doc(hidden)]
        pub struct __HotModule;

        // The host side: left out of the module's own `cdylib` build, which
        // compiles only the boundary (`hotswap-runtime` without `host`).
        #p::host_items! {
            /// A hot-swappable handle on this module: `Hot::open(path)` loads a
            /// build of this crate, `get()` returns typed accessors, `reload()`
            /// swaps in the build now on disk.
            pub type Hot = ::hotswap_runtime::Hot<__HotModule>;

            /// Typed access to this module, pinned by `Hot::get`: one method per
            /// exported function. Keep it short-lived.
            pub struct HotGuard<'__hotswap> {
                __pinned: #p::Pinned<'__hotswap, __HotModule>,
            }

            impl<'__hotswap> HotGuard<'__hotswap> {
                #(#methods)*
            }

            #[doc(hidden)]
            pub struct __HotTable {
                #(pub #names: #p::Shim<#markers>,)*
            }

            impl #p::Sealed for __HotModule {}

            impl #p::ModuleSpec for __HotModule {
                const MODULE: &'static str = #module_name;
                const CRATE: &'static str = #crate_name;
                const FUNCTIONS: &'static [#p::FnSpec] = &[#(#p::FnSpec::of::<#markers>()),*];
                type Table = __HotTable;

                fn table(__hotswap_functions: &#p::Resolved) -> __HotTable {
                    __HotTable { #(#names: __hotswap_functions.shim::<#markers>(),)* }
                }
            }

            impl #p::HotModule for __HotModule {
                type Guard<'__hotswap> = HotGuard<'__hotswap>;

                fn guard(__hotswap_pinned: #p::Pinned<'_, Self>) -> HotGuard<'_> {
                    HotGuard { __pinned: __hotswap_pinned }
                }
            }
        }

        /// Calls this module from inside another hot module: the other
        /// module names this one in `#[hot_module(uses(...))]` and calls
        /// `HotLink::get().function(...)`. Each call reaches the version
        /// serving at that moment, with the same name, arguments (minus the
        /// state) and return type as the function; a panic in this module
        /// is resumed in the caller. A link holds nothing (every call finds
        /// the serving version anew), so it never keeps a version loaded,
        /// and it may cross an `.await`; an `async fn`'s future holds its
        /// version until it is done.
        #[derive(Clone, Copy)]
        pub struct HotLink {
            __private: (),
        }

        impl HotLink {
            /// A link to this module's serving version, for calls from
            /// another hot module.
            #[inline]
            pub fn get() -> Self {
                HotLink { __private: () }
            }

            #(#link_methods)*
        }

        #(
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            pub struct #markers;
        )*

        // Items nothing outside needs to name.
        const _: () = {
            #(#functions)*

            #lifecycle

            #user_type_checks

            #[doc(hidden)]
            static __HOTSWAP_FUNCTIONS: [#p::FnEntry; #count] = [#(#entries),*];

            #[doc(hidden)]
            static __HOTSWAP_IMPORTS: [&'static #p::ModuleDescriptor; #import_count] = [#(#imports),*];

            #[doc(hidden)]
            static __HOTSWAP_SERVICES: [#p::ServiceDecl; #service_count] = [#(#services),*];

            #[doc(hidden)]
            static __HOTSWAP_DESCRIPTOR: #p::ModuleDescriptor = #descriptor(
                #module_name,
                #crate_name,
                ::core::env!("CARGO_PKG_VERSION"),
                &__HOTSWAP_FUNCTIONS,
                #p::Uses {
                    imports: &__HOTSWAP_IMPORTS,
                    services: &__HOTSWAP_SERVICES,
                },
            );

            // SAFETY: the descriptor lists this module's functions, with the
            // marker `Export` impls `HotLink` calls them by.
            unsafe impl #p::Linkable for __HotModule {
                const DESCRIPTOR: &'static #p::ModuleDescriptor = &__HOTSWAP_DESCRIPTOR;
            }

            #[doc(hidden)]
            #[unsafe(export_name = #symbol)]
            pub static __HOTSWAP_HEADER: #p::ModuleHeader = #p::ModuleHeader::new(&__HOTSWAP_DESCRIPTOR);
        };
    }
}

fn marker(function: &Function) -> syn::Ident {
    format_ident!("__hotswap_fn_{}", function.ident)
}

fn shim(function: &Function) -> syn::Ident {
    format_ident!("__hotswap_shim_{}", function.ident)
}

fn arg_vars(function: &Function) -> Vec<syn::Ident> {
    (0..function.params.len())
        .map(|index| format_ident!("__hotswap_a{index}"))
        .collect()
}

fn ret_ffi(function: &Function, lifetime: &TokenStream) -> TokenStream {
    function
        .ret
        .as_ref()
        .map_or_else(|| quote!(()), |ret| ret.ffi_type(lifetime))
}

/// The `extern "C"` shim and the marker's `Export`/call impls of one
/// exported function (module side), all unnamed from outside.
fn describe(function: &Function, state: Option<&syn::Type>) -> TokenStream {
    let p = quote!(::hotswap_runtime::__private_0_1);
    let (marker, shim) = (marker(function), shim(function));
    let name = function.ident.to_string();
    let ident = &function.ident;
    let signature = &function.signature;
    let borrowed = quote!('__hotswap);
    let fixed = quote!('static);
    // The argument types as they cross, with borrows at `lifetime`.
    let ffi_types = |lifetime: &TokenStream| -> Vec<TokenStream> {
        function
            .params
            .iter()
            .map(|param| param.carried.ffi_type(lifetime))
            .collect()
    };
    let arg_types = ffi_types(&borrowed);
    let arg_types_anon = ffi_types(&quote!('_));
    let layout_types = ffi_types(&fixed);
    let ret = ret_ffi(function, &fixed);
    // An `async fn` returns its output's future; its layout is marked so a
    // host never takes one kind of function for the other.
    let (ret, layout) = if function.is_async {
        (
            quote!(#p::FfiFuture<#ret>),
            quote!(#p::PhantomData<(#p::AsyncReturn, #ret, #(#layout_types,)*)>),
        )
    } else {
        let layout = quote!(#p::PhantomData<(#ret, #(#layout_types,)*)>);
        (ret, layout)
    };
    let mut kept = Vec::new();
    if let Some(ret) = &function.ret {
        ret.user_types(&mut kept);
    }
    let kept = kept.iter().map(|ty| quote!(<#ty as #p::StableAbi>::LAYOUT));
    let vars = arg_vars(function);
    let converted = function
        .params
        .iter()
        .zip(&vars)
        .map(|(param, var)| param.carried.ffi_to_rust(quote!(#var), 0))
        .collect::<Vec<_>>();
    let result = match &function.ret {
        Some(carried) => carried.rust_to_ffi(quote!(__hotswap_ret), 0),
        None => quote!(__hotswap_ret),
    };
    let (receiver, call_trait, state_param, state_arg, run) = match (function.receiver, state) {
        (Receiver::Shared, Some(state)) => (
            quote!(Shared),
            quote!(#p::CallShared),
            quote!(__hotswap_state: &#state,),
            quote!(__hotswap_state,),
            quote!(#p::run_shared::<#marker>(__hotswap_state, __hotswap_panic, (#(#vars,)*))),
        ),
        (Receiver::Exclusive, Some(state)) => (
            quote!(Exclusive),
            quote!(#p::CallExclusive),
            quote!(__hotswap_state: &mut #state,),
            quote!(__hotswap_state,),
            quote!(#p::run_exclusive::<#marker>(__hotswap_state, __hotswap_panic, (#(#vars,)*))),
        ),
        _ => (
            quote!(None),
            quote!(#p::CallStateless),
            quote!(),
            quote!(),
            quote!({
                let _ = __hotswap_state;
                #p::run_stateless::<#marker>(__hotswap_panic, (#(#vars,)*))
            }),
        ),
    };
    let body = if function.is_async {
        // Arguments are converted now (they are owned: `check`); the
        // future runs the function and converts what it returns.
        quote! {
            let (#(#vars,)*) = __hotswap_args;
            #(let #vars = #converted;)*
            #p::FfiFuture::new(async move {
                let __hotswap_ret = self::#ident(#(#vars),*).await;
                #result
            })
        }
    } else {
        quote! {
            let (#(#vars,)*) = __hotswap_args;
            let __hotswap_ret = self::#ident(#state_arg #(#converted),*);
            #result
        }
    };
    let state_type = match (function.receiver, state) {
        (Receiver::None, _) | (_, None) => quote!(),
        (_, Some(state)) => quote!(type State = #state;),
    };
    quote! {
        /// The exported entry point: arguments and result in registers,
        /// a panic's message written to the host's slot.
        #[doc(hidden)]
        #[allow(non_snake_case, improper_ctypes_definitions, clippy::too_many_arguments)]
        unsafe extern "C" fn #shim(
            __hotswap_state: *mut #p::c_void,
            __hotswap_panic: *mut #p::PanicMessage,
            #(#vars: #arg_types_anon,)*
        ) -> #p::ShimReturn<#ret> {
            // SAFETY: only the hotswap runtime calls this, through the entry
            // checked against this signature, with a writable panic slot and
            // the live, suitably locked state of this version.
            unsafe { #run }
        }

        // SAFETY: `Fn`, `Layout`, `RECEIVER` and `KEPT` are written from
        // the same parsed signature as the shim above.
        unsafe impl #p::Export for #marker {
            const NAME: &'static str = #name;
            const RUST_SIGNATURE: &'static str = #signature;
            const RECEIVER: #p::StateAccess = #p::StateAccess::#receiver;
            type Args<#borrowed> = (#(#arg_types,)*);
            type Ret = #ret;
            type Fn<#borrowed> = unsafe extern "C" fn(*mut #p::c_void, *mut #p::PanicMessage, #(#arg_types),*) -> #p::ShimReturn<#ret>;
            type Layout = #layout;
            const KEPT: &'static [&'static #p::TypeLayout] = &[#(#kept),*];
        }

        impl #call_trait for #marker {
            #state_type
            fn call(#state_param __hotswap_args: (#(#arg_types_anon,)*)) -> #ret {
                #body
            }
        }
    }
}

/// What the host's guard method and the `HotLink` method of one exported
/// function share: the parameters, their conversion to FFI types, the
/// return type and the conversion of the result back.
struct MethodParts {
    params: Vec<TokenStream>,
    converted: Vec<TokenStream>,
    ret_type: Option<TokenStream>,
    back: TokenStream,
}

fn method_parts(function: &Function) -> MethodParts {
    MethodParts {
        params: function
            .params
            .iter()
            .map(|param| {
                let (name, ty) = (&param.name, &param.ty);
                quote!(#name: #ty)
            })
            .collect(),
        converted: function
            .params
            .iter()
            .map(|param| param.carried.rust_to_ffi(param.name.to_token_stream(), 0))
            .collect(),
        // An `async fn`'s method returns its future, which holds the
        // version it was called on, not the guard or link.
        ret_type: if function.is_async {
            let output = function
                .ret_type
                .map_or_else(|| quote!(()), |ty| quote!(#ty));
            Some(
                quote!(-> impl ::core::future::Future<Output = #output> + ::core::marker::Send + 'static),
            )
        } else {
            function.ret_type.as_ref().map(|ty| quote!(-> #ty))
        },
        back: match &function.ret {
            Some(carried) => carried.ffi_to_rust(quote!(__hotswap_ret), 0),
            None => quote!(__hotswap_ret),
        },
    }
}

/// The `HotLink` method of one exported function: the call goes through
/// the host to the serving version (see `hotswap_boundary::link`).
fn link_method(function: &Function, index: usize) -> TokenStream {
    let p = quote!(::hotswap_runtime::__private_0_1);
    let ident = &function.ident;
    let docs = &function.docs;
    let marker = marker(function);
    let MethodParts {
        params,
        converted,
        ret_type,
        back,
    } = method_parts(function);
    if function.is_async {
        return quote_spanned! {function.ident.span()=>
            #(#docs)*
            #[allow(clippy::too_many_arguments)]
            pub fn #ident(&self, #(#params),*) #ret_type {
                let __hotswap_args = (#(#converted,)*);
                #p::link_call_async::<#marker, _, _, _>(
                    <__HotModule as #p::Linkable>::DESCRIPTOR,
                    #index,
                    __hotswap_args,
                    |__hotswap_ret| #back,
                )
            }
        };
    }
    quote_spanned! {function.ident.span()=>
        #(#docs)*
        #[allow(clippy::too_many_arguments)]
        pub fn #ident(&self, #(#params),*) #ret_type {
            let __hotswap_args = (#(#converted,)*);
            #p::link_call::<#marker, _>(
                <__HotModule as #p::Linkable>::DESCRIPTOR,
                #index,
                __hotswap_args,
                // Converted while the callee is pinned: values it made are
                // freed by its own code.
                |__hotswap_ret| #back,
            )
        }
    }
}

/// The host's typed method for one exported `async fn`: it returns a
/// future that holds the version it was called on until it completes.
fn async_guard_method(function: &Function) -> TokenStream {
    let ident = &function.ident;
    let docs = &function.docs;
    let MethodParts {
        params,
        converted,
        ret_type,
        back,
    } = method_parts(function);
    quote_spanned! {function.ident.span()=>
        #(#docs)*
        #[inline]
        #[allow(clippy::too_many_arguments)]
        pub fn #ident(&self, #(#params),*) #ret_type {
            let __hotswap_args = (#(#converted,)*);
            self.__pinned.call_async(
                |__hotswap_table| &__hotswap_table.#ident,
                __hotswap_args,
                |__hotswap_ret| #back,
            )
        }
    }
}

/// The host's typed method for one exported function.
fn guard_method(function: &Function) -> TokenStream {
    if function.is_async {
        return async_guard_method(function);
    }
    let ident = &function.ident;
    let docs = &function.docs;
    let MethodParts {
        params,
        converted,
        ret_type,
        back,
    } = method_parts(function);
    let (call, invoke, state) = match function.receiver {
        Receiver::None => (quote!(call), quote!(invoke_stateless), quote!()),
        Receiver::Shared => (
            quote!(call_shared),
            quote!(invoke_shared),
            quote!(__hotswap_state,),
        ),
        Receiver::Exclusive => (
            quote!(call_exclusive),
            quote!(invoke_exclusive),
            quote!(__hotswap_state,),
        ),
    };
    // Stateful calls select the shim first, so the runtime can read the
    // pinned version's before it takes the state lock.
    let (select, callee, closure_params) = match function.receiver {
        Receiver::None => (
            quote!(),
            quote!(__hotswap_table.#ident),
            quote!(__hotswap_table),
        ),
        _ => (
            quote!(|__hotswap_table| &__hotswap_table.#ident,),
            quote!(__hotswap_shim),
            quote!(__hotswap_shim, __hotswap_state),
        ),
    };
    quote_spanned! {function.ident.span()=>
        #(#docs)*
        // Inline: the host calls across crates, and an out-of-line accessor
        // would double the calls per module call.
        #[inline]
        #[allow(clippy::too_many_arguments)]
        pub fn #ident(&self, #(#params),*) #ret_type {
            let __hotswap_args = (#(#converted,)*);
            self.__pinned.#call(#select |#closure_params| {
                // Convert while the version is pinned: values the module made
                // must be freed by the module's own code.
                ::core::result::Result::map(
                    #callee.#invoke(#state __hotswap_args),
                    |__hotswap_ret| #back,
                )
            })
        }
    }
}

/// `Lifecycle` for the module marker: how to call `setup`/`teardown`.
fn lifecycle_impl(lifecycle: &Lifecycle) -> TokenStream {
    let p = quote!(::hotswap_runtime::__private_0_1);
    let state = &lifecycle.state;
    let handoff = lifecycle
        .handoff
        .as_ref()
        .map_or_else(|| quote!(()), |ty| quote!(#ty));
    let call_setup = if lifecycle.setup_takes_prev {
        quote!(self::setup(__hotswap_prev))
    } else {
        quote!({
            let _ = __hotswap_prev;
            self::setup()
        })
    };
    let setup_body = if lifecycle.setup_fallible {
        quote!(::core::result::Result::map_err(#call_setup, |__hotswap_error| ::std::string::ToString::to_string(&__hotswap_error)))
    } else {
        quote!(::core::result::Result::Ok(#call_setup))
    };
    let teardown_body = match (&lifecycle.handoff, lifecycle.has_teardown) {
        (_, true) => quote!(::core::option::Option::Some(self::teardown(
            __hotswap_state
        ))),
        (Some(_), false) => quote!(::core::option::Option::Some(__hotswap_state)),
        // Nothing to hand over: the state drops here, in the module.
        (None, false) => quote!({
            let _ = __hotswap_state;
            ::core::option::Option::None
        }),
    };
    quote! {
        impl #p::Lifecycle for __HotModule {
            type State = #state;
            type Handoff = #handoff;

            fn setup(__hotswap_prev: ::core::option::Option<#handoff>) -> ::core::result::Result<#state, ::std::string::String> {
                #setup_body
            }

            fn teardown(__hotswap_state: #state) -> ::core::option::Option<#handoff> {
                #teardown_body
            }
        }
    }
}
