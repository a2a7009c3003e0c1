//! The option catalogue as this shop sells it: the configured options, their
//! prices, and which of them a customer may buy here. Choosing and pricing
//! are pure rules (`domain::options`); this module reads them off the
//! configuration.

use crate::{
    config::{RestorationProvider, Settings},
    domain::options::{Choice, ChoiceError, Offer, PriceList, RestorationOption},
};

/// One option as `GET /api/pricing` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub option: RestorationOption,
    pub label: String,
    pub description: String,
    pub unit_amount: i64,
    pub available: bool,
}

/// Whether the configured provider has a way to do `option`: the local
/// engine upscales (and repairs) but has no face or colour model; Replicate
/// does what a configured model is named for; the instant provider (for
/// tests and load) does anything.
fn provider_runs(settings: &Settings, option: RestorationOption) -> bool {
    let configured = settings.options.get(option.as_str());
    match settings.restoration_provider() {
        RestorationProvider::Local => {
            matches!(
                option,
                RestorationOption::Upscale2x | RestorationOption::Upscale4x
            ) && configured.is_some()
        }
        RestorationProvider::Replicate => configured.is_some_and(|o| !o.model.trim().is_empty()),
        RestorationProvider::Instant => configured.is_some(),
    }
}

/// Whether a customer may buy `option` here: an option the provider cannot
/// run is listed as unavailable, never sold.
pub fn offered(settings: &Settings, option: RestorationOption) -> bool {
    provider_runs(settings, option)
}

/// The configured options, in chain order, with whether each is sold.
pub fn catalogue(settings: &Settings) -> Vec<Listed> {
    RestorationOption::ALL
        .into_iter()
        .filter_map(|option| {
            let o = settings.options.get(option.as_str())?;
            Some(Listed {
                option,
                label: o.label.clone(),
                description: o.description.clone(),
                unit_amount: o.unit_amount,
                available: offered(settings, option),
            })
        })
        .collect()
}

/// What photos and their options cost here.
pub fn price_list(settings: &Settings) -> PriceList {
    let pricing = &settings.pricing;
    PriceList {
        currency: pricing.currency.clone(),
        product_name: pricing.product_name.clone(),
        unit_amount: pricing.unit_amount,
        offers: catalogue(settings)
            .into_iter()
            .map(|l| Offer {
                option: l.option,
                label: l.label,
                unit_amount: l.unit_amount,
            })
            .collect(),
    }
}

/// Reads a customer's requested options against what this shop sells.
pub fn choose(settings: &Settings, ids: &[String]) -> Result<Choice, Vec<ChoiceError>> {
    Choice::parse(ids, |option| offered(settings, option))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: &str) -> Settings {
        let env = [
            ("RESTORECLICK__RESTORATION__PROVIDER", provider),
            ("RESTORECLICK__REPLICATE__API_TOKEN", "r8_test"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        Settings::load_with_env(std::path::Path::new("/nonexistent"), &env).expect("settings")
    }

    #[test]
    fn the_shipped_catalogue_lists_every_option_in_chain_order() {
        let listed = catalogue(&settings("local"));
        let ids: Vec<&str> = listed.iter().map(|l| l.option.as_str()).collect();
        assert_eq!(ids, ["faces", "colorize", "upscale_2x", "upscale_4x"]);
        assert!(listed.iter().all(|l| l.unit_amount > 0 && !l.label.is_empty()));
    }

    #[test]
    fn the_local_engine_can_upscale_but_has_no_face_or_colour_model() {
        let local = settings("local");
        assert!(provider_runs(&local, RestorationOption::Upscale2x));
        assert!(provider_runs(&local, RestorationOption::Upscale4x));
        assert!(!provider_runs(&local, RestorationOption::Faces));
        assert!(!provider_runs(&local, RestorationOption::Colorize));
        let replicate = settings("replicate");
        assert!(
            RestorationOption::ALL
                .into_iter()
                .all(|o| provider_runs(&replicate, o))
        );
    }

    /// What the provider cannot run is listed but not sold.
    #[test]
    fn only_what_the_provider_can_run_is_sold() {
        let local = settings("local");
        let available: Vec<&str> = catalogue(&local)
            .iter()
            .filter(|l| l.available)
            .map(|l| l.option.as_str())
            .collect();
        assert_eq!(available, ["upscale_2x", "upscale_4x"]);
        assert_eq!(
            choose(&local, &["faces".to_owned()]),
            Err(vec![ChoiceError::Unavailable(RestorationOption::Faces)])
        );
        assert_eq!(choose(&local, &["repair".to_owned()]), Ok(Choice::default()));
        let replicate = settings("replicate");
        assert!(catalogue(&replicate).iter().all(|l| l.available));
        assert!(choose(&replicate, &["faces".to_owned(), "colorize".to_owned()]).is_ok());
    }
}
