//! The native side of the bindings: every import keeps its Go signature but calls a
//! function field of `Fake` (a `FakeHost`), which a test sets; a field left unset panics
//! with the field's name and the WIT function it stands for.

use crate::gobind::Gen;
use anyhow::Result;
use std::fmt::Write;
use wit_parser::{Function, FunctionKind};

impl Gen<'_> {
    /// The stand-in of one import: a `FakeHost` field and a function or method calling it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fake_import(
        &mut self,
        f: &Function,
        receiver: &str,
        fname: &str,
        decl: &[String],
        results: &str,
        docs: &str,
        wit_name: &str,
    ) -> Result<()> {
        let field = match &f.kind {
            FunctionKind::Method(_) => {
                let ty = receiver.trim_start_matches("(self ").trim_end_matches(") ");
                format!("{ty}{fname}")
            }
            _ => fname.to_string(),
        };
        let mut params = decl.to_vec();
        let mut args: Vec<String> = decl.iter().map(|d| d.split(' ').next().unwrap_or_default().to_string()).collect();
        if !receiver.is_empty() {
            let ty = receiver.trim_start_matches("(self ").trim_end_matches(") ");
            params.insert(0, format!("self {ty}"));
            args.insert(0, "self".into());
        }
        writeln!(self.fake_fields, "\t// {wit_name}\n\t{field} func({}){results}", params.join(", "))?;
        let call = format!("Fake.{field}({})", args.join(", "));
        let ret = if results.is_empty() { "" } else { "return " };
        write!(
            self.fake_funcs,
            "\n{docs}func {receiver}{fname}({}){results} {{\n\tif Fake.{field} == nil {{\n\t\tfakeMissing({field:?}, {wit_name:?})\n\t}}\n\t{ret}{call}\n}}\n",
            decl.join(", ")
        )?;
        Ok(())
    }

    /// `fake_host.go`: `FakeHost`, `Fake` and the stand-ins.
    pub(super) fn fake_host(&self, header: &str) -> String {
        format!(
            "{header}
// FakeHost stands in for the wasmta host when the plugin's code runs natively (go test):
// each field is one host function; set the ones the code under test calls.
type FakeHost struct {{
{fields}}}

// Fake is the host native code calls.
var Fake = &FakeHost{{}}

func fakeMissing(field, function string) {{
	panic(\"wasmta fake host: \" + function + \" was called but wasmta.Fake.\" + field + \" is not set\")
}}
{funcs}",
            fields = self.fake_fields,
            funcs = self.fake_funcs
        )
    }
}
