//! Sampler configs as the LLC sweep takes them: a validated config with its name (which names
//! the sweep's folder) and SGLD step, the built-in configs, and the restriction mask.

use std::path::Path;

use anyhow::Result;
use stagewise_sampling::Sgld;
use stagewise_sampling::config::SamplerConfig;
use stagewise_sampling::mask::build_mask;

use crate::rundir::check_name;

/// The built-in sampler configs: the tiny one of the quick pipeline and the paper's, and
/// those of the quick and the reference language model and of sparse parity runs.
pub const SAMPLER_TINY: &str = include_str!("../../../../configs/sampler-tiny.yaml");
pub const SAMPLER_PAPER: &str = include_str!("../../../../configs/sampler-paper.yaml");
pub const SAMPLER_LM_QUICK: &str = include_str!("../../../../configs/sampler-lm-quick.yaml");
pub const SAMPLER_LM_PAPER: &str = include_str!("../../../../configs/sampler-lm-paper.yaml");
pub const SAMPLER_PARITY: &str = include_str!("../../../../configs/sampler-parity.yaml");

/// A sampler config with its name (which names the sweep's folder) and its SGLD step.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub name: String,
    pub config: SamplerConfig,
    pub sgld: Sgld,
    /// Where the config came from (names it in errors).
    pub origin: String,
}

impl Sampler {
    /// A sampler config file with `--set` overrides, validated; named after the file stem.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            stagewise_io::config::ConfigLoadError::Io {
                path: path.into(),
                source,
            }
        })?;
        Self::from_text(&config_name(path), &text, &path.display().to_string(), sets)
    }

    /// A sampler config from YAML text.
    pub fn from_text(name: &str, text: &str, origin: &str, sets: &[String]) -> Result<Self> {
        check_name(&format!("{origin}: the sampler name"), name)?;
        let config: SamplerConfig = stagewise_io::config::plain_from_text(text, origin, sets)?;
        let sgld = config
            .sgld()
            .map_err(|e| anyhow::anyhow!("{origin}: field `{e}`"))?;
        Ok(Sampler {
            name: name.into(),
            config,
            sgld,
            origin: origin.into(),
        })
    }

    /// The restriction mask of this sampler's include/exclude globs over a model's tensors
    /// (`None`: every parameter moves); a bad pattern is an error naming the sampler config.
    pub fn mask(&self, layout: &stagewise_models::ParamLayout) -> Result<Option<Vec<bool>>> {
        build_mask(
            &layout.named_sizes(),
            &self.config.include,
            &self.config.exclude,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", self.origin))
    }

    /// The built-in tiny sampler (`configs/sampler-tiny.yaml`: the paper's step, 2 chains x 50
    /// draws).
    pub fn tiny() -> Self {
        Self::from_text(
            "sampler-tiny",
            SAMPLER_TINY,
            "built-in sampler-tiny.yaml",
            &[],
        )
        .expect("the built-in sampler config is valid")
    }

    /// The paper's sampler (`configs/sampler-paper.yaml`).
    pub fn paper() -> Self {
        Self::from_text(
            "sampler-paper",
            SAMPLER_PAPER,
            "built-in sampler-paper.yaml",
            &[],
        )
        .expect("the built-in sampler config is valid")
    }
}

/// The file stem of a config path (names the output folder).
pub fn config_name(config: &Path) -> String {
    config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sampler".into())
}
