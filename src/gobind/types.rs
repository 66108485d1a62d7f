//! WIT types as Go types, and for every composite type four helpers of the canonical ABI:
//! `load_K(addr)` / `store_K(addr, v)` in linear memory, and `lift_K(slots)` /
//! `lower_K(v, slots)` over flattened values. Flattened values travel as raw bits in
//! `[]uint64` slots, which makes the variant "join" of the ABI a plain reinterpretation.

use crate::gobind::Gen;
use crate::gobind::names::pascal;
use anyhow::{Result, bail};
use std::fmt::Write;
use wit_parser::abi::{FlatTypes, WasmType};
use wit_parser::{Handle, Int, Type, TypeDefKind, TypeId};

/// A case of a variant-like type: the Go field holding its payload, and the payload type.
struct Case {
    field: Option<String>,
    ty: Option<Type>,
}

fn int_size(i: Int) -> &'static str {
    match i {
        Int::U8 => "u8",
        Int::U16 => "u16",
        Int::U32 => "u32",
        Int::U64 => "u64",
    }
}

impl Gen<'_> {
    /// Follows `type a = b` and `use` aliases to the defining type.
    pub fn dealias(&self, ty: &Type) -> Type {
        let mut t = *ty;
        while let Type::Id(id) = t {
            match &self.resolve.types[id].kind {
                TypeDefKind::Type(inner) => t = *inner,
                _ => break,
            }
        }
        t
    }

    pub fn size(&self, ty: &Type) -> usize {
        self.sizes.size(ty).size_wasm32()
    }

    pub fn align(&self, ty: &Type) -> usize {
        self.sizes.align(ty).align_wasm32()
    }

    /// The flattened core types of `ty`.
    pub fn flat(&self, ty: &Type) -> Vec<WasmType> {
        let mut storage = [WasmType::I32; 256];
        let mut flat = FlatTypes::new(&mut storage);
        assert!(self.resolve.push_flat(ty, &mut flat), "type too large to flatten");
        flat.to_vec()
    }

    /// The resource a handle type refers to.
    pub fn handle_resource(&self, ty: &Type) -> Option<(TypeId, bool)> {
        if let Type::Id(id) = self.dealias(ty)
            && let TypeDefKind::Handle(h) = &self.resolve.types[id].kind
        {
            return Some(match h {
                Handle::Own(r) => (self.resource_id(*r), false),
                Handle::Borrow(r) => (self.resource_id(*r), true),
            });
        }
        None
    }

    fn resource_id(&self, r: TypeId) -> TypeId {
        match self.dealias(&Type::Id(r)) {
            Type::Id(id) => id,
            _ => r,
        }
    }

    fn named(&self, id: TypeId) -> Result<String> {
        match &self.resolve.types[id].name {
            Some(n) => Ok(pascal(n)),
            None => bail!("anonymous {} types are not supported", self.resolve.types[id].kind.as_str()),
        }
    }

    /// The Go spelling of `ty`; declares named types on first use.
    pub fn go_type(&mut self, ty: &Type) -> Result<String> {
        Ok(match self.dealias(ty) {
            Type::Bool => "bool".into(),
            Type::U8 => "uint8".into(),
            Type::U16 => "uint16".into(),
            Type::U32 => "uint32".into(),
            Type::U64 => "uint64".into(),
            Type::S8 => "int8".into(),
            Type::S16 => "int16".into(),
            Type::S32 => "int32".into(),
            Type::S64 => "int64".into(),
            Type::F32 => "float32".into(),
            Type::F64 => "float64".into(),
            Type::Char => "rune".into(),
            Type::String => "string".into(),
            Type::ErrorContext => bail!("error-context is not supported"),
            Type::Id(id) => {
                let kind = self.resolve.types[id].kind.clone();
                match kind {
                    TypeDefKind::Option(t) => format!("Option[{}]", self.go_type(&t)?),
                    TypeDefKind::Result(r) => format!("Result[{}, {}]", self.go_opt(r.ok)?, self.go_opt(r.err)?),
                    TypeDefKind::List(t) => format!("[]{}", self.go_type(&t)?),
                    TypeDefKind::Handle(_) => {
                        let (r, _) = self.handle_resource(ty).expect("handle");
                        self.go_type(&Type::Id(r))?
                    }
                    TypeDefKind::Record(_) | TypeDefKind::Enum(_) | TypeDefKind::Variant(_) | TypeDefKind::Resource => {
                        let name = self.named(id)?;
                        self.declare(id, &name)?;
                        name
                    }
                    other => bail!("WIT {} types are not supported by the Go bindings", other.as_str()),
                }
            }
        })
    }

    fn go_opt(&mut self, ty: Option<Type>) -> Result<String> {
        match ty {
            Some(t) => self.go_type(&t),
            None => Ok("struct{}".into()),
        }
    }

    /// The suffix of the helpers of `ty` (`load_<key>` ...).
    pub fn key(&self, ty: &Type) -> String {
        match self.dealias(ty) {
            Type::Bool => "bool".into(),
            Type::U8 => "u8".into(),
            Type::U16 => "u16".into(),
            Type::U32 => "u32".into(),
            Type::U64 => "u64".into(),
            Type::S8 => "s8".into(),
            Type::S16 => "s16".into(),
            Type::S32 => "s32".into(),
            Type::S64 => "s64".into(),
            Type::F32 => "f32".into(),
            Type::F64 => "f64".into(),
            Type::Char => "char".into(),
            Type::String => "string".into(),
            Type::ErrorContext => "errctx".into(),
            Type::Id(id) => match &self.resolve.types[id].kind {
                TypeDefKind::Option(t) => format!("Opt_{}", self.key(t)),
                TypeDefKind::Result(r) => {
                    let k = |t: &Option<Type>| t.as_ref().map(|t| self.key(t)).unwrap_or_else(|| "unit".into());
                    format!("Res_{}_{}", k(&r.ok), k(&r.err))
                }
                TypeDefKind::List(t) => format!("List_{}", self.key(t)),
                TypeDefKind::Handle(_) => {
                    let (r, _) = self.handle_resource(ty).expect("handle");
                    self.key(&Type::Id(r))
                }
                _ => self.resolve.types[id].name.as_deref().map(pascal).unwrap_or_else(|| format!("T{}", id.index())),
            },
        }
    }

    /// Declares the Go type of a named record, enum, variant or resource.
    fn declare(&mut self, id: TypeId, name: &str) -> Result<()> {
        let owner = format!("{:?}", self.resolve.types[id].owner);
        if let Some(prev) = self.declared.get(name) {
            if *prev != owner {
                bail!("two WIT types map to the Go name {name}");
            }
            return Ok(());
        }
        self.declared.insert(name.to_string(), owner);
        let kind = self.resolve.types[id].kind.clone();
        let docs = self.resolve.types[id].docs.contents.clone().unwrap_or_default();
        let mut d = String::new();
        for line in docs.lines() {
            writeln!(d, "// {line}")?;
        }
        match kind {
            TypeDefKind::Record(r) => {
                let mut fields = String::new();
                for f in &r.fields {
                    writeln!(fields, "\t{} {}", pascal(&f.name), self.go_type(&f.ty)?)?;
                }
                writeln!(d, "type {name} struct {{\n{fields}}}")?;
            }
            TypeDefKind::Enum(e) => {
                writeln!(d, "type {name} uint32\n\nconst (")?;
                for (i, c) in e.cases.iter().enumerate() {
                    writeln!(d, "\t{name}{} {name} = {i}", pascal(&c.name))?;
                }
                writeln!(d, ")")?;
            }
            TypeDefKind::Variant(v) => {
                let mut fields = String::new();
                let mut consts = String::new();
                let mut ctors = String::new();
                for (i, c) in v.cases.iter().enumerate() {
                    let case = pascal(&c.name);
                    writeln!(consts, "\t{name}Tag{case} uint32 = {i}")?;
                    match &c.ty {
                        Some(t) => {
                            let gt = self.go_type(t)?;
                            writeln!(fields, "\t{case} {gt}")?;
                            writeln!(
                                ctors,
                                "func {name}{case}(v {gt}) {name} {{ return {name}{{Tag: {i}, {case}: v}} }}"
                            )?;
                        }
                        None => writeln!(ctors, "func {name}{case}() {name} {{ return {name}{{Tag: {i}}} }}")?,
                    }
                }
                writeln!(d, "type {name} struct {{\n\tTag uint32\n{fields}}}\n\nconst (\n{consts})\n\n{ctors}")?;
            }
            TypeDefKind::Resource => {
                writeln!(d, "type {name} struct {{ handle uint32 }}")?;
            }
            _ => unreachable!(),
        }
        self.decls.push('\n');
        self.decls.push_str(&d);
        Ok(())
    }

    /// Generates the helpers of `ty` (and of the types inside it) once; returns its key.
    pub fn ensure(&mut self, ty: &Type) -> Result<String> {
        let key = self.key(ty);
        let t = self.dealias(ty);
        let Type::Id(id) = t else { return Ok(key) };
        if self.done.contains(&key) {
            return Ok(key);
        }
        self.done.insert(key.clone());
        let gt = self.go_type(&t)?;
        let kind = self.resolve.types[id].kind.clone();
        let code = match kind {
            TypeDefKind::Record(r) => {
                let tys: Vec<Type> = r.fields.iter().map(|f| f.ty).collect();
                let offsets: Vec<usize> =
                    self.sizes.field_offsets(tys.iter()).into_iter().map(|(o, _)| o.size_wasm32()).collect();
                let (mut load, mut store, mut lift, mut lower) =
                    (String::new(), String::new(), String::new(), String::new());
                for ((f, ty), off) in r.fields.iter().zip(&tys).zip(offsets) {
                    let k = self.ensure(ty)?;
                    let fname = pascal(&f.name);
                    writeln!(load, "\tv.{fname} = load_{k}(a + {off})")?;
                    writeln!(store, "\tstore_{k}(a+{off}, v.{fname})")?;
                    writeln!(lift, "\tv.{fname}, s = lift_{k}(s)")?;
                    writeln!(lower, "\ts = lower_{k}(v.{fname}, s)")?;
                }
                format!(
                    "func load_{key}(a uint32) {gt} {{\n\tvar v {gt}\n{load}\treturn v\n}}\n\n\
                     func store_{key}(a uint32, v {gt}) {{\n{store}}}\n\n\
                     func lift_{key}(s []uint64) ({gt}, []uint64) {{\n\tvar v {gt}\n{lift}\treturn v, s\n}}\n\n\
                     func lower_{key}(v {gt}, s []uint64) []uint64 {{\n{lower}\treturn s\n}}\n"
                )
            }
            TypeDefKind::Enum(e) => {
                let tag = int_size(e.tag());
                format!(
                    "func load_{key}(a uint32) {gt} {{ return {gt}(load_{tag}(a)) }}\n\n\
                     func store_{key}(a uint32, v {gt}) {{ store_{tag}(a, {cast}(v)) }}\n\n\
                     func lift_{key}(s []uint64) ({gt}, []uint64) {{ return {gt}(uint32(s[0])), s[1:] }}\n\n\
                     func lower_{key}(v {gt}, s []uint64) []uint64 {{ return append(s, uint64(v)) }}\n",
                    cast = go_uint(e.tag())
                )
            }
            TypeDefKind::Variant(v) => {
                let cases: Vec<Case> =
                    v.cases.iter().map(|c| Case { field: c.ty.map(|_| pascal(&c.name)), ty: c.ty }).collect();
                self.variant_like(&key, &gt, &t, v.tag(), "v.Tag", "uint32", &cases)?
            }
            TypeDefKind::Option(inner) => {
                let cases = [Case { field: None, ty: None }, Case { field: Some("Value".into()), ty: Some(inner) }];
                self.variant_like(&key, &gt, &t, Int::U8, "v.Valid", "bool", &cases)?
            }
            TypeDefKind::Result(r) => {
                let cases =
                    [Case { field: Some("Ok".into()), ty: r.ok }, Case { field: Some("Err".into()), ty: r.err }];
                self.variant_like(&key, &gt, &t, Int::U8, "v.IsErr", "bool", &cases)?
            }
            TypeDefKind::List(elem) => {
                let k = self.ensure(&elem)?;
                let eg = self.go_type(&elem)?;
                let (size, align) = (self.size(&elem), self.align(&elem));
                let (loadlist, storelist) = if k == "u8" {
                    ("\treturn loadbytes(p, n)".to_string(), "\treturn storebytes(v)".to_string())
                } else {
                    (
                        format!(
                            "\tv := make([]{eg}, n)\n\tfor i := range v {{\n\t\tv[i] = load_{k}(p + uint32(i)*{size})\n\t}}\n\treturn v"
                        ),
                        format!(
                            "\tp := allocPinned(uint32(len(v))*{size}, {align})\n\tfor i := range v {{\n\t\tstore_{k}(p+uint32(i)*{size}, v[i])\n\t}}\n\treturn p, uint32(len(v))"
                        ),
                    )
                };
                format!(
                    "func loadlist_{key}(p, n uint32) {gt} {{\n{loadlist}\n}}\n\n\
                     func storelist_{key}(v {gt}) (uint32, uint32) {{\n{storelist}\n}}\n\n\
                     func load_{key}(a uint32) {gt} {{ return loadlist_{key}(load_u32(a), load_u32(a+4)) }}\n\n\
                     func store_{key}(a uint32, v {gt}) {{\n\tp, n := storelist_{key}(v)\n\tstore_u32(a, p)\n\tstore_u32(a+4, n)\n}}\n\n\
                     func lift_{key}(s []uint64) ({gt}, []uint64) {{ return loadlist_{key}(uint32(s[0]), uint32(s[1])), s[2:] }}\n\n\
                     func lower_{key}(v {gt}, s []uint64) []uint64 {{\n\tp, n := storelist_{key}(v)\n\treturn append(s, uint64(p), uint64(n))\n}}\n"
                )
            }
            TypeDefKind::Handle(_) | TypeDefKind::Resource => format!(
                "func load_{key}(a uint32) {gt} {{ return {gt}{{load_u32(a)}} }}\n\n\
                 func store_{key}(a uint32, v {gt}) {{ store_u32(a, v.handle) }}\n\n\
                 func lift_{key}(s []uint64) ({gt}, []uint64) {{ return {gt}{{uint32(s[0])}}, s[1:] }}\n\n\
                 func lower_{key}(v {gt}, s []uint64) []uint64 {{ return append(s, uint64(v.handle)) }}\n"
            ),
            other => bail!("WIT {} types are not supported by the Go bindings", other.as_str()),
        };
        self.helpers.push('\n');
        self.helpers.push_str(&code);
        Ok(key)
    }

    /// Variants, options and results: a discriminant, then the payload of the case.
    #[allow(clippy::too_many_arguments)]
    fn variant_like(
        &mut self,
        key: &str,
        gt: &str,
        ty: &Type,
        tag: Int,
        tag_expr: &str,
        tag_go: &str,
        cases: &[Case],
    ) -> Result<String> {
        let payload = self.sizes.payload_offset(tag, cases.iter().map(|c| c.ty.as_ref())).size_wasm32();
        let joined = self.flat(ty).len() - 1;
        let tag_size = int_size(tag);
        let (mut load, mut store, mut lift, mut lower) = (String::new(), String::new(), String::new(), String::new());
        for (i, c) in cases.iter().enumerate() {
            let Some(t) = c.ty else { continue };
            let k = self.ensure(&t)?;
            let field = c.field.as_deref().expect("payload field");
            let cond = if tag_go == "bool" {
                if i == 1 { tag_expr.to_string() } else { format!("!{tag_expr}") }
            } else {
                format!("{tag_expr} == {i}")
            };
            writeln!(load, "\tif {cond} {{\n\t\tv.{field} = load_{k}(a + {payload})\n\t}}")?;
            writeln!(store, "\tif {cond} {{\n\t\tstore_{k}(a+{payload}, v.{field})\n\t}}")?;
            writeln!(lift, "\tif {cond} {{\n\t\tv.{field}, _ = lift_{k}(s[1:])\n\t}}")?;
            writeln!(lower, "\tif {cond} {{\n\t\ts = lower_{k}(v.{field}, s)\n\t}}")?;
        }
        let (tag_from_u32, tag_to_u32) = if tag_go == "bool" {
            ("t != 0".to_string(), format!("var t uint32\n\tif {tag_expr} {{\n\t\tt = 1\n\t}}"))
        } else {
            ("t".to_string(), format!("t := {tag_expr}"))
        };
        Ok(format!(
            "func load_{key}(a uint32) {gt} {{\n\tvar v {gt}\n\tt := uint32(load_{tag_size}(a))\n\t{tag_expr} = {tag_from_u32}\n{load}\treturn v\n}}\n\n\
             func store_{key}(a uint32, v {gt}) {{\n\t{tag_to_u32}\n\tstore_{tag_size}(a, {cast}(t))\n{store}}}\n\n\
             func lift_{key}(s []uint64) ({gt}, []uint64) {{\n\tvar v {gt}\n\tt := uint32(s[0])\n\t{tag_expr} = {tag_from_u32}\n{lift}\treturn v, s[{skip}:]\n}}\n\n\
             func lower_{key}(v {gt}, s []uint64) []uint64 {{\n\t{tag_to_u32}\n\ts = append(s, uint64(t))\n\tn := len(s) + {joined}\n{lower}\tfor len(s) < n {{\n\t\ts = append(s, 0)\n\t}}\n\treturn s\n}}\n",
            cast = go_uint(tag),
            skip = joined + 1,
        ))
    }
}

fn go_uint(i: Int) -> &'static str {
    match i {
        Int::U8 => "uint8",
        Int::U16 => "uint16",
        Int::U32 => "uint32",
        Int::U64 => "uint64",
    }
}
