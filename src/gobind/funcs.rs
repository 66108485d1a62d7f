//! Imports become Go functions (freestanding) or methods (resource methods) that lower
//! their arguments, call a `//go:wasmimport` declaration and lift the result (and, for
//! native tests, the same signatures over a `FakeHost` field); exports become
//! `//go:wasmexport` functions that lift the arguments, call the method of the same name on
//! the registered plugin and lower what it returns.

use crate::gobind::Gen;
use crate::gobind::names::{camel, ident, pascal};
use anyhow::{Result, bail};
use std::fmt::Write;
use wit_parser::abi::{AbiVariant, WasmType};
use wit_parser::{
    Function, FunctionKind, InterfaceId, LiftLowerAbi, ManglingAndAbi, ResourceIntrinsic, Type, TypeDefKind,
    WasmExport, WasmExportKind, WasmImport, WorldKey,
};

const MANGLING: ManglingAndAbi = ManglingAndAbi::Legacy(LiftLowerAbi::Sync);

fn core_type(t: WasmType) -> &'static str {
    match t {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => "uint32",
        WasmType::I64 | WasmType::PointerOrI64 => "uint64",
        WasmType::F32 => "float32",
        WasmType::F64 => "float64",
    }
}

/// A slot (raw bits) as a value of the core type.
fn from_slot(t: WasmType, slot: &str) -> String {
    match core_type(t) {
        "uint32" => format!("uint32({slot})"),
        "uint64" => slot.to_string(),
        "float32" => format!("math.Float32frombits(uint32({slot}))"),
        _ => format!("math.Float64frombits({slot})"),
    }
}

/// A value of the core type as a slot.
fn to_slot(t: WasmType, value: &str) -> String {
    match core_type(t) {
        "uint32" => format!("uint64({value})"),
        "uint64" => value.to_string(),
        "float32" => format!("uint64(math.Float32bits({value}))"),
        _ => format!("math.Float64bits({value})"),
    }
}

/// How a function result looks in Go.
enum Ret {
    None,
    Plain(Type),
    /// `result<T, E>`: `(T, *E)`, or `(T, error)` for imports when E is a string.
    Result {
        ok: Option<Type>,
        err: Type,
    },
}

impl Gen<'_> {
    fn ret(&self, f: &Function) -> Result<Ret> {
        let Some(t) = f.result else { return Ok(Ret::None) };
        if let Type::Id(id) = self.dealias(&t)
            && let TypeDefKind::Result(r) = &self.resolve.types[id].kind
        {
            let Some(err) = r.err else { bail!("{}: result without an error type is not supported", f.name) };
            return Ok(Ret::Result { ok: r.ok, err });
        }
        Ok(Ret::Plain(t))
    }

    /// The Go result list of `f` (after the parameter list).
    fn go_results(&mut self, f: &Function, import: bool) -> Result<String> {
        Ok(match self.ret(f)? {
            Ret::None => String::new(),
            Ret::Plain(t) => format!(" {}", self.go_type(&t)?),
            Ret::Result { ok, err } => {
                let e = if import && self.dealias(&err) == Type::String {
                    "error".to_string()
                } else {
                    format!("*{}", self.go_type(&err)?)
                };
                match ok {
                    Some(ok) => format!(" ({}, {e})", self.go_type(&ok)?),
                    None => format!(" {e}"),
                }
            }
        })
    }

    pub fn import_interface(&mut self, key: &WorldKey, id: InterfaceId) -> Result<()> {
        let iface = &self.resolve.interfaces[id];
        let iname = ident(&self.resolve.name_world_key(key));
        for (_, &tid) in &iface.types {
            if matches!(self.resolve.types[tid].kind, TypeDefKind::Resource) {
                self.resource_drop(key, tid)?;
            }
        }
        let funcs: Vec<Function> = iface.functions.values().cloned().collect();
        for f in &funcs {
            self.import_func(key, &iname, f)?;
        }
        Ok(())
    }

    fn resource_drop(&mut self, key: &WorldKey, tid: wit_parser::TypeId) -> Result<()> {
        let go = self.go_type(&Type::Id(tid))?;
        let (module, name) = self.resolve.wasm_import_name(
            MANGLING,
            WasmImport::ResourceIntrinsic {
                interface: Some(key),
                resource: tid,
                intrinsic: ResourceIntrinsic::ImportedDrop,
            },
        );
        writeln!(
            self.funcs,
            "\n//go:wasmimport {module} {name}\nfunc wasmimport_drop_{go}(h uint32)\n\n\
             // Drop releases the handle.\nfunc (self {go}) Drop() {{ wasmimport_drop_{go}(self.handle) }}"
        )?;
        writeln!(
            self.fake_funcs,
            "\n// Drop releases the handle (nothing to release natively).\nfunc (self {go}) Drop() {{}}"
        )?;
        Ok(())
    }

    fn import_func(&mut self, key: &WorldKey, iname: &str, f: &Function) -> Result<()> {
        let sig = self.resolve.wasm_signature(AbiVariant::GuestImport, f);
        let (module, name) =
            self.resolve.wasm_import_name(MANGLING, WasmImport::Func { interface: Some(key), func: f });
        let raw = format!("wasmimport_{iname}_{}", ident(&f.name));
        let params: Vec<String> =
            sig.params.iter().enumerate().map(|(i, t)| format!("p{i} {}", core_type(*t))).collect();
        let result = match sig.results.first() {
            Some(t) => format!(" {}", core_type(*t)),
            None => String::new(),
        };
        writeln!(self.funcs, "\n//go:wasmimport {module} {name}\nfunc {raw}({}){result}", params.join(", "))?;

        // the Go face
        let (receiver, fname, args) = match &f.kind {
            FunctionKind::Freestanding => (String::new(), pascal(&f.name), &f.params[..]),
            FunctionKind::Method(_) => {
                let go = self.go_type(&f.params[0].ty)?;
                (format!("(self {go}) "), pascal(f.item_name()), &f.params[1..])
            }
            _ => bail!("{}: only functions and resource methods are supported", f.name),
        };
        let mut decl = Vec::new();
        for p in args {
            decl.push(format!("{} {}", camel(&p.name), self.go_type(&p.ty)?));
        }
        let results = self.go_results(f, true)?;
        let docs = f.docs.contents.clone().unwrap_or_default();
        let mut body = String::new();
        for line in docs.lines() {
            writeln!(body, "// {line}")?;
        }
        self.fake_import(f, &receiver, &fname, &decl, &results, &body, &format!("{module}#{name}"))?;
        writeln!(body, "func {receiver}{fname}({}){results} {{", decl.join(", "))?;
        writeln!(body, "\tmark := pinMark()\n\tvar s []uint64\n\t_ = s")?;
        let names: Vec<String> = f
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| if i == 0 && receiver.starts_with('(') { "self".into() } else { camel(&p.name) })
            .collect();
        if sig.indirect_params {
            let tys: Vec<Type> = f.params.iter().map(|p| p.ty).collect();
            let info = self.sizes.params(tys.iter());
            let offsets = self.sizes.field_offsets(tys.iter());
            writeln!(body, "\tpa := allocPinned({}, {})", info.size.size_wasm32(), info.align.align_wasm32())?;
            for ((off, ty), n) in offsets.into_iter().zip(&names) {
                let k = self.ensure(ty)?;
                writeln!(body, "\tstore_{k}(pa+{}, {n})", off.size_wasm32())?;
            }
            writeln!(body, "\ts = append(s, uint64(pa))")?;
        } else {
            for (p, n) in f.params.iter().zip(&names) {
                let k = self.ensure(&p.ty)?;
                writeln!(body, "\ts = lower_{k}({n}, s)")?;
            }
        }
        if sig.retptr {
            let size = f.result.map(|t| self.size(&t)).unwrap_or(0);
            self.import_ret = self.import_ret.max(size);
            writeln!(body, "\ts = append(s, uint64(importRetAddr()))")?;
        }
        let call_args: Vec<String> =
            sig.params.iter().enumerate().map(|(i, t)| from_slot(*t, &format!("s[{i}]"))).collect();
        let call = format!("{raw}({})", call_args.join(", "));
        match (f.result, sig.retptr) {
            (None, _) => writeln!(body, "\t{call}\n\tpinRelease(mark)\n\tarenaReset()\n}}")?,
            (Some(t), retptr) => {
                let k = self.ensure(&t)?;
                if retptr {
                    writeln!(body, "\t{call}\n\tv := load_{k}(importRetAddr())")?;
                } else {
                    let r = to_slot(sig.results[0], "r");
                    writeln!(body, "\tr := {call}\n\tv, _ := lift_{k}([]uint64{{{r}}})")?;
                }
                writeln!(body, "\tpinRelease(mark)\n\tarenaReset()")?;
                match self.ret(f)? {
                    Ret::Result { ok, err } => {
                        let string_err = self.dealias(&err) == Type::String;
                        let e = if string_err { "errors.New(v.Err)" } else { "&v.Err" };
                        if ok.is_some() {
                            writeln!(body, "\tif v.IsErr {{\n\t\treturn v.Ok, {e}\n\t}}\n\treturn v.Ok, nil\n}}")?;
                        } else {
                            writeln!(body, "\tif v.IsErr {{\n\t\treturn {e}\n\t}}\n\treturn nil\n}}")?;
                        }
                    }
                    _ => writeln!(body, "\treturn v\n}}")?,
                }
            }
        }
        self.funcs.push('\n');
        self.funcs.push_str(&body);
        Ok(())
    }

    pub fn export_interface(&mut self, key: &WorldKey, id: InterfaceId) -> Result<()> {
        let iface = &self.resolve.interfaces[id];
        let iname = ident(&self.resolve.name_world_key(key));
        let shown = self.resolve.name_world_key(key);
        let funcs: Vec<Function> = iface.functions.values().cloned().collect();
        let mut methods = String::new();
        for f in &funcs {
            if !matches!(f.kind, FunctionKind::Freestanding) {
                bail!("{}: exported resources are not supported", f.name);
            }
            let mut decl = Vec::new();
            for p in &f.params {
                decl.push(format!("{} {}", camel(&p.name), self.go_type(&p.ty)?));
            }
            let results = self.go_results(f, false)?;
            writeln!(methods, "\t{}({}){results}", pascal(&f.name), decl.join(", "))?;
            self.export_func(key, &iname, f)?;
        }
        let iface_name = format!("{}Exports", pascal(iface.name.as_deref().unwrap_or("world")));
        writeln!(
            self.exports,
            "\n// {iface_name}: the methods a plugin has to export {shown}.\ntype {iface_name} interface {{\n{methods}}}"
        )?;
        self.export_ifaces.push(iface_name);
        Ok(())
    }

    fn export_func(&mut self, key: &WorldKey, iname: &str, f: &Function) -> Result<()> {
        let sig = self.resolve.wasm_signature(AbiVariant::GuestExport, f);
        let name = self.resolve.wasm_export_name(
            MANGLING,
            WasmExport::Func { interface: Some(key), func: f, kind: WasmExportKind::Normal },
        );
        let params: Vec<String> =
            sig.params.iter().enumerate().map(|(i, t)| format!("p{i} {}", core_type(*t))).collect();
        let result = match sig.results.first() {
            Some(t) => format!(" {}", core_type(*t)),
            None => String::new(),
        };
        let mut body = String::new();
        writeln!(
            body,
            "//go:wasmexport {name}\nfunc wasmexport_{iname}_{}({}){result} {{\n\tpinRelease(0)",
            ident(&f.name),
            params.join(", ")
        )?;
        let names: Vec<String> = (0..f.params.len()).map(|i| format!("a{i}")).collect();
        if sig.indirect_params {
            let tys: Vec<Type> = f.params.iter().map(|p| p.ty).collect();
            let offsets = self.sizes.field_offsets(tys.iter());
            for ((off, ty), n) in offsets.into_iter().zip(&names) {
                let k = self.ensure(ty)?;
                writeln!(body, "\t{n} := load_{k}(p0 + {})", off.size_wasm32())?;
            }
        } else {
            let slots: Vec<String> =
                sig.params.iter().enumerate().map(|(i, t)| to_slot(*t, &format!("p{i}"))).collect();
            writeln!(body, "\ts := []uint64{{{}}}", slots.join(", "))?;
            for (p, n) in f.params.iter().zip(&names) {
                let k = self.ensure(&p.ty)?;
                let gt = self.go_type(&p.ty)?;
                writeln!(body, "\tvar {n} {gt}\n\t{n}, s = lift_{k}(s)")?;
            }
            writeln!(body, "\t_ = s")?;
        }
        writeln!(body, "\tarenaReset()")?;
        let call = format!("registered().{}({})", pascal(&f.name), names.join(", "));
        let ret = self.ret(f)?;
        match &ret {
            Ret::None => writeln!(body, "\t{call}")?,
            Ret::Plain(_) => writeln!(body, "\tv := {call}")?,
            Ret::Result { ok: Some(_), .. } => writeln!(body, "\tok, err := {call}")?,
            Ret::Result { ok: None, .. } => writeln!(body, "\terr := {call}")?,
        }
        // borrowed handles must be dropped before returning
        for (p, n) in f.params.iter().zip(&names) {
            if let Some((_, true)) = self.handle_resource(&p.ty) {
                writeln!(body, "\t{n}.Drop()")?;
            }
        }
        if let Ret::Result { ok, .. } = &ret {
            let gt = self.go_type(&f.result.expect("result"))?;
            writeln!(body, "\tvar v {gt}\n\tif err != nil {{\n\t\tv.IsErr = true\n\t\tv.Err = *err\n\t}}")?;
            if ok.is_some() {
                writeln!(body, "\tv.Ok = ok")?;
            }
        }
        if let Some(t) = f.result {
            let k = self.ensure(&t)?;
            if sig.retptr {
                self.export_ret = self.export_ret.max(self.size(&t));
                writeln!(body, "\tstore_{k}(exportRetAddr(), v)\n\treturn exportRetAddr()")?;
            } else {
                let r = from_slot(sig.results[0], "lower_{k}(v, nil)[0]").replace("{k}", &k);
                writeln!(body, "\treturn {r}")?;
            }
        }
        body.push_str("}\n");
        self.funcs.push('\n');
        self.funcs.push_str(&body);
        Ok(())
    }
}
