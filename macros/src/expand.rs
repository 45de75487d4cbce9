//! The expansion of `#[derive(IdempotentCreate)]`: read `#[idempotent(key = ..)]`, find the
//! key's fields, and write the impl a user would write by hand for `Data = ActiveModel`.
//!
//! (Near 500 lines with its unit tests: one expansion, its every error pointing at the
//! attribute, and the tests of each error beside the code that makes it.)

use heck::ToUpperCamelCase;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote};
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::{Attribute, Data, DeriveInput, Field, Fields, Ident, LitStr, Token, Type};

/// What a natural key may hold at most: `NaturalKey` is implemented for tuples of two to six.
const MAX_KEY_COLUMNS: usize = 6;

/// How to write the attribute, for the messages.
const USAGE: &str = "name the natural key on the struct: `#[idempotent(key = \"pr_id\")]`, \
                     or `#[idempotent(key(tenant_id, pr_id))]` for a key of several columns";

/// The impl of `IdempotentCreate` for the `Entity` beside `input` (a `DeriveEntityModel`
/// `Model`), or the errors, each pointing at what is wrong in the attribute.
pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let names = key_names(&input.attrs)?;
    let fields = named_fields(input)?;

    let mut errors: Option<syn::Error> = None;
    let mut parts = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let found = key_part(name, &names[..n], fields);
        match found {
            Ok(part) => parts.push(part),
            Err(e) => match &mut errors {
                Some(errors) => errors.combine(e),
                None => errors = Some(e),
            },
        }
    }
    if let Some(errors) = errors {
        return Err(errors);
    }

    let variants: Vec<_> = parts.iter().map(|part| &part.variant).collect();
    let first = variants[0];
    let (key, key_columns) = if parts.len() == 1 {
        let ty = parts[0].ty;
        (quote!(#ty), quote!())
    } else {
        let types = parts.iter().map(|part| part.ty);
        (
            quote!((#(#types),*)),
            quote! {
                fn key_columns() -> ::std::vec::Vec<Column> {
                    ::std::vec![#(Column::#variants),*]
                }
            },
        )
    };
    Ok(quote! {
        #[automatically_derived]
        impl ::sea_orm_idempotent::IdempotentCreate for Entity {
            type Key = #key;
            type Data = ActiveModel;

            fn key_column() -> Column {
                Column::#first
            }

            #key_columns

            fn new_active_model(_: &Self::Key, row: ActiveModel) -> ActiveModel {
                // The crate sets the key columns from the key.
                row
            }
        }
    })
}

/// The field names `#[idempotent(key = "a")]` or `#[idempotent(key(a, b))]` gives, as idents
/// spanned where the attribute names them.
fn key_names(attrs: &[Attribute]) -> syn::Result<Vec<Ident>> {
    let mut attr_seen: Option<&Attribute> = None;
    let mut names: Option<Vec<Ident>> = None;
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident("idempotent"))
    {
        if attr_seen.is_some() {
            return Err(syn::Error::new_spanned(
                attr,
                "a second `#[idempotent(..)]` attribute: name every key column in one `key`",
            ));
        }
        attr_seen = Some(attr);
        attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("key") {
                return Err(meta.error(format!(
                    "unknown argument of `#[idempotent(..)]`; {USAGE} (anything else: \
                     implement `IdempotentCreate` by hand)"
                )));
            }
            if names.is_some() {
                return Err(meta.error("`key` is given twice"));
            }
            if meta.input.peek(Token![=]) {
                let value = meta.value()?;
                if !value.peek(LitStr) {
                    let found: proc_macro2::TokenTree = value.parse()?;
                    return Err(syn::Error::new(
                        found.span(),
                        format!("`key = ..` takes the field's name in quotes; {USAGE}"),
                    ));
                }
                let text: LitStr = value.parse()?;
                let name = text.parse::<Ident>().map_err(|_| {
                    syn::Error::new(
                        text.span(),
                        format!("`key = \"..\"` names one field of the struct; {USAGE}"),
                    )
                })?;
                names = Some(vec![name]);
            } else if meta.input.peek(syn::token::Paren) {
                let content;
                let parens = syn::parenthesized!(content in meta.input);
                let list = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
                if list.is_empty() {
                    // Spanned over `key()`, the path and its parentheses.
                    let mut spanned = meta.path.to_token_stream();
                    parens.surround(&mut spanned, |_| {});
                    return Err(syn::Error::new_spanned(
                        spanned,
                        format!("`key()` names no field; {USAGE}"),
                    ));
                }
                names = Some(list.into_iter().collect());
            } else {
                return Err(meta.error(USAGE));
            }
            Ok(())
        })?;
    }
    match (names, attr_seen) {
        (Some(names), _) => Ok(names),
        (None, Some(attr)) => Err(syn::Error::new_spanned(attr, format!("no `key`; {USAGE}"))),
        (None, None) => Err(syn::Error::new(
            Span::call_site(),
            format!("`#[derive(IdempotentCreate)]` needs the natural key; {USAGE}"),
        )),
    }
}

/// The fields of the `Model` struct.
fn named_fields(input: &DeriveInput) -> syn::Result<&Punctuated<Field, Token![,]>> {
    match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => Ok(&fields.named),
            _ => Err(not_a_model(input)),
        },
        _ => Err(not_a_model(input)),
    }
}

fn not_a_model(input: &DeriveInput) -> syn::Error {
    syn::Error::new_spanned(
        &input.ident,
        "`#[derive(IdempotentCreate)]` goes on the `Model` struct of a `DeriveEntityModel` entity",
    )
}

/// One part of the key: its field's type and its `Column` variant.
struct KeyPart<'a> {
    ty: &'a Type,
    /// Spanned at the name in the attribute, so a variant that does not exist points there.
    variant: Ident,
}

/// The part of the key that `name` (after `before`) names, or why it cannot be one.
fn key_part<'a>(
    name: &Ident,
    before: &[Ident],
    fields: &'a Punctuated<Field, Token![,]>,
) -> syn::Result<KeyPart<'a>> {
    let wanted = name.unraw();
    if before.iter().any(|earlier| earlier.unraw() == wanted) {
        return Err(syn::Error::new(
            name.span(),
            format!("`{wanted}` is named twice in the key"),
        ));
    }
    if before.len() == MAX_KEY_COLUMNS {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "a natural key has at most {MAX_KEY_COLUMNS} columns (a tuple of two to \
                 {MAX_KEY_COLUMNS}); `{wanted}` is one too many"
            ),
        ));
    }
    let Some(field) = fields.iter().find(|field| {
        field
            .ident
            .as_ref()
            .is_some_and(|ident| ident.unraw() == wanted)
    }) else {
        let known: Vec<String> = fields
            .iter()
            .filter_map(|field| field.ident.as_ref().map(|ident| ident.unraw().to_string()))
            .collect();
        return Err(syn::Error::new(
            name.span(),
            format!(
                "no field `{wanted}` in this struct; the key names its fields: {}",
                known.join(", ")
            ),
        ));
    };
    let column = SeaOrmField::of(field);
    if column.ignored {
        return Err(syn::Error::new(
            name.span(),
            format!("`{wanted}` is `#[sea_orm(ignore)]`: it has no column to be a key"),
        ));
    }
    if is_option(&field.ty) {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`{wanted}` is an `Option`: a natural key has no NULL parts (a key is \
                 `Display`, which `Option` is not); make the column NOT NULL, or implement \
                 `IdempotentCreate` by hand with a key of another type"
            ),
        ));
    }
    let variant = column
        .enum_name
        .unwrap_or_else(|| wanted.to_string().to_upper_camel_case());
    Ok(KeyPart {
        ty: &field.ty,
        variant: variant_ident(&variant, name.span()),
    })
}

/// The `Column` variant named `variant`, as DeriveEntityModel writes it: a Rust keyword
/// becomes a raw identifier, `Self`, `self` and `crate` get a trailing `_`.
fn variant_ident(variant: &str, span: Span) -> Ident {
    const SPECIAL: [&str; 3] = ["crate", "Self", "self"];
    if SPECIAL.contains(&variant) {
        return format_ident!("{variant}_", span = span);
    }
    match syn::parse_str::<Ident>(variant) {
        Ok(ident) => Ident::new(&ident.to_string(), span),
        // A keyword: sea-orm-macros makes it raw.
        Err(_) => Ident::new_raw(variant, span),
    }
}

/// What `#[sea_orm(..)]` on a field says that matters here: whether it is a column at all
/// (`ignore`), and the name of its `Column` variant when `enum_name` overrides it. Everything
/// else is DeriveEntityModel's to read (and to reject).
struct SeaOrmField {
    ignored: bool,
    enum_name: Option<String>,
}

impl SeaOrmField {
    fn of(field: &Field) -> SeaOrmField {
        let mut found = SeaOrmField {
            ignored: false,
            enum_name: None,
        };
        for attr in field
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("sea_orm"))
        {
            // A malformed attribute is DeriveEntityModel's error, not ours.
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("ignore") {
                    found.ignored = true;
                } else if meta.path.is_ident("enum_name") {
                    let name: LitStr = meta.value()?.parse()?;
                    found.enum_name = Some(name.value());
                } else if meta.input.peek(Token![=]) {
                    meta.value()?.parse::<syn::Expr>()?;
                } else if meta.input.peek(syn::token::Paren) {
                    let _content;
                    syn::parenthesized!(_content in meta.input);
                }
                Ok(())
            });
        }
        found
    }
}

/// Whether `ty` is written as an `Option<..>` (`Option`, `std::option::Option`, ..). An alias
/// of one is not seen here: its key fails to be a `NaturalKey` where it is used.
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Option"),
        Type::Group(group) => is_option(&group.elem),
        Type::Paren(paren) => is_option(&paren.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(input: TokenStream) -> syn::Result<String> {
        derive(&syn::parse2(input).unwrap()).map(|tokens| tokens.to_string())
    }

    fn error(input: TokenStream) -> String {
        expand(input).unwrap_err().to_string()
    }

    #[test]
    fn one_column_key_is_the_field_type_and_its_variant() {
        let out = expand(quote! {
            #[idempotent(key = "pr_id")]
            pub struct Model { pub id: i64, #[sea_orm(unique)] pub pr_id: i64 }
        })
        .unwrap();
        assert!(out.contains("type Key = i64"), "{out}");
        assert!(out.contains("Column :: PrId"), "{out}");
        assert!(!out.contains("key_columns"), "{out}");
        let listed = expand(quote! {
            #[idempotent(key(pr_id))]
            pub struct Model { pub id: i64, #[sea_orm(unique)] pub pr_id: i64 }
        })
        .unwrap();
        assert_eq!(listed, out, "`key(pr_id)` is `key = \"pr_id\"`");
    }

    #[test]
    fn composite_key_is_a_tuple_in_the_attribute_order() {
        let out = expand(quote! {
            #[idempotent(key(login, org_id))]
            pub struct Model { pub id: i64, pub org_id: i64, pub login: String }
        })
        .unwrap();
        assert!(out.contains("type Key = (String , i64)"), "{out}");
        assert!(
            out.contains("fn key_column () -> Column { Column :: Login }"),
            "{out}"
        );
        assert!(
            out.contains(":: std :: vec ! [Column :: Login , Column :: OrgId]"),
            "{out}"
        );
    }

    #[test]
    fn variants_follow_derive_entity_model() {
        let out = expand(quote! {
            #[idempotent(key(r#type, self_, a_1, renamed))]
            pub struct Model {
                pub r#type: String,
                pub self_: i32,
                pub a_1: i32,
                #[sea_orm(column_name = "x", enum_name = "Other")]
                pub renamed: i32,
            }
        })
        .unwrap();
        assert!(
            out.contains("[Column :: Type , Column :: Self_ , Column :: A1 , Column :: Other]"),
            "{out}"
        );
    }

    #[test]
    fn every_mistake_is_refused() {
        for (input, message) in [
            (
                quote!(
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "`#[derive(IdempotentCreate)]` needs the natural key",
            ),
            (
                quote!(
                    #[idempotent(key())]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "`key()` names no field",
            ),
            (
                quote!(
                    #[idempotent(key = "nope")]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "no field `nope` in this struct; the key names its fields: id",
            ),
            (
                quote!(
                    #[idempotent(key(id, id))]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "`id` is named twice in the key",
            ),
            (
                quote!(
                    #[idempotent(key = "id")]
                    pub struct Model {
                        pub id: Option<i64>,
                    }
                ),
                "`id` is an `Option`",
            ),
            (
                quote!(
                    #[idempotent(key = "id")]
                    pub struct Model {
                        #[sea_orm(ignore)]
                        pub id: i64,
                    }
                ),
                "`id` is `#[sea_orm(ignore)]`",
            ),
            (
                quote!(
                    #[idempotent(key(a, b, c, d, e, f, g))]
                    pub struct Model {
                        a: i8,
                        b: i8,
                        c: i8,
                        d: i8,
                        e: i8,
                        f: i8,
                        g: i8,
                    }
                ),
                "a natural key has at most 6 columns",
            ),
            (
                quote!(
                    #[idempotent(keys = "id")]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "unknown argument of `#[idempotent(..)]`",
            ),
            (
                quote!(
                    #[idempotent(key = "id", key = "id")]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "`key` is given twice",
            ),
            (
                quote!(
                    #[idempotent(key = "id")]
                    #[idempotent(key = "id")]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "a second `#[idempotent(..)]` attribute",
            ),
            (
                quote!(
                    #[idempotent()]
                    pub struct Model {
                        pub id: i64,
                    }
                ),
                "no `key`",
            ),
            (
                quote!(
                    #[idempotent(key = "id")]
                    pub enum Model {
                        A,
                    }
                ),
                "goes on the `Model` struct",
            ),
        ] {
            let got = error(input);
            assert!(got.contains(message), "{got:?} should say {message:?}");
        }
    }
}
