//! An ncnn `.param` file built layer by layer in a test: each line `type name inputs outputs
//! inputs... outputs... params`, under the magic number and the layer and blob counts, as
//! ncnn's `ParamDict` reads it. The `.bin` beside it is each test's own (formats vary).
//! Included with `#[path = "support/ncnn_param.rs"] mod ncnn_param;`.

/// The layers so far and how many blobs they output.
#[derive(Default)]
pub struct Param {
    pub lines: Vec<String>,
    pub blobs: usize,
}

impl Param {
    pub fn layer(
        &mut self,
        kind: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        params: &str,
    ) {
        self.blobs += outputs.len();
        self.lines.push(format!(
            "{kind} {name} {} {} {} {} {params}",
            inputs.len(),
            outputs.len(),
            inputs.join(" "),
            outputs.join(" ")
        ));
    }

    /// The file's text.
    pub fn text(&self) -> String {
        format!(
            "7767517\n{} {}\n{}\n",
            self.lines.len(),
            self.blobs,
            self.lines.join("\n")
        )
    }
}
