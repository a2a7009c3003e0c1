//! The restoration options a customer may buy beside the repair every photo
//! gets: which exist, which exclude each other, the order their steps run
//! in, and what a choice of them costs. Pure: the catalogue's prices and
//! which options the configured provider can run come from configuration.

use std::{borrow::Borrow, collections::BTreeSet, fmt, str::FromStr};

use super::payments::{LineItem, Quote};

/// An option a photo may have beside its repair. Declared in the order the
/// chain runs their steps: repair → faces → colorize → upscale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RestorationOption {
    Faces,
    Colorize,
    Upscale2x,
    Upscale4x,
}

/// The options' ids, for messages that list them.
pub const OPTION_NAMES: &str = "faces, colorize, upscale_2x, upscale_4x";

impl RestorationOption {
    /// Every option, in chain order.
    pub const ALL: [Self; 4] = [Self::Faces, Self::Colorize, Self::Upscale2x, Self::Upscale4x];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Faces => "faces",
            Self::Colorize => "colorize",
            Self::Upscale2x => "upscale_2x",
            Self::Upscale4x => "upscale_4x",
        }
    }

    /// Options that cannot share a photo with this one: a photo is
    /// upscaled once.
    fn excludes(self, other: Self) -> bool {
        matches!(
            (self, other),
            (Self::Upscale2x, Self::Upscale4x) | (Self::Upscale4x, Self::Upscale2x)
        )
    }
}

impl fmt::Display for RestorationOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RestorationOption {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|o| o.as_str() == s).ok_or(())
    }
}

/// What was wrong with one requested option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChoiceError {
    #[error("{0:?} is not an option; choose from {OPTION_NAMES}")]
    Unknown(String),
    #[error("{0} is not offered by this shop")]
    Unavailable(RestorationOption),
    #[error("{0} and {1} exclude each other")]
    Conflicting(RestorationOption, RestorationOption),
}

/// The options one photo has, in chain order, none excluding another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice(BTreeSet<RestorationOption>);

impl Choice {
    /// Reads a requested list of option ids: every one known, offered
    /// (`offered`) and compatible with the rest; a repeated id counts once.
    /// `repair` is always done, so naming it changes nothing. Every problem
    /// is reported, not only the first.
    pub fn parse(
        ids: &[String],
        offered: impl Fn(RestorationOption) -> bool,
    ) -> Result<Self, Vec<ChoiceError>> {
        let mut chosen = BTreeSet::new();
        let mut errors = Vec::new();
        for id in ids {
            if id == "repair" {
                continue;
            }
            match id.parse::<RestorationOption>() {
                Ok(option) if offered(option) => {
                    chosen.insert(option);
                }
                Ok(option) => errors.push(ChoiceError::Unavailable(option)),
                Err(()) => errors.push(ChoiceError::Unknown(id.clone())),
            }
        }
        for a in &chosen {
            for b in chosen.range(a..).skip(1) {
                if a.excludes(*b) {
                    errors.push(ChoiceError::Conflicting(*a, *b));
                }
            }
        }
        if errors.is_empty() {
            Ok(Self(chosen))
        } else {
            Err(errors)
        }
    }

    pub fn contains(&self, option: RestorationOption) -> bool {
        self.0.contains(&option)
    }

    /// The options in the order their steps run.
    pub fn iter(&self) -> impl Iterator<Item = RestorationOption> + '_ {
        self.0.iter().copied()
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.iter().map(RestorationOption::as_str).collect()
    }
}

/// One option as the shop sells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub option: RestorationOption,
    pub label: String,
    /// Minor units per photo.
    pub unit_amount: i64,
}

/// What every photo costs, and what each sold option adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceList {
    pub currency: String,
    /// The repair's line name and price per photo.
    pub product_name: String,
    pub unit_amount: i64,
    pub offers: Vec<Offer>,
}

impl PriceList {
    fn offer(&self, option: RestorationOption) -> Option<&Offer> {
        self.offers.iter().find(|o| o.option == option)
    }

    /// What a photo with `choice` costs: the repair plus each option.
    pub fn photo_amount(&self, choice: &Choice) -> i64 {
        self.unit_amount
            + choice
                .iter()
                .filter_map(|o| self.offer(o))
                .map(|o| o.unit_amount)
                .sum::<i64>()
    }

    /// The quote for photos with these choices: one line per kind (the
    /// repair × every photo, then each option × the photos that have it,
    /// in chain order), each photo's price, and their sum.
    pub fn quote<C: Borrow<Choice>>(&self, photos: &[C]) -> Quote {
        let photos: Vec<&Choice> = photos.iter().map(Borrow::borrow).collect();
        let quantity = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut line_items = vec![LineItem {
            kind: "repair".to_owned(),
            name: self.product_name.clone(),
            unit_amount: self.unit_amount,
            quantity: quantity(photos.len()),
        }];
        for option in RestorationOption::ALL {
            let having = photos.iter().filter(|c| c.contains(option)).count();
            if let (Some(offer), true) = (self.offer(option), having > 0) {
                line_items.push(LineItem {
                    kind: option.as_str().to_owned(),
                    name: offer.label.clone(),
                    unit_amount: offer.unit_amount,
                    quantity: quantity(having),
                });
            }
        }
        Quote {
            currency: self.currency.to_ascii_lowercase(),
            amount_total: line_items.iter().map(LineItem::amount).sum(),
            line_items,
            photo_amounts: photos.iter().map(|c| self.photo_amount(c)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn prices() -> PriceList {
        let offer = |option, unit_amount| Offer {
            option,
            label: option.to_string(),
            unit_amount,
        };
        PriceList {
            currency: "USD".to_owned(),
            product_name: "Photo restoration".to_owned(),
            unit_amount: 500,
            offers: vec![
                offer(RestorationOption::Faces, 200),
                offer(RestorationOption::Colorize, 300),
                offer(RestorationOption::Upscale2x, 100),
                offer(RestorationOption::Upscale4x, 250),
            ],
        }
    }

    #[test]
    fn the_listed_names_are_every_option() {
        let names: Vec<&str> = RestorationOption::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(OPTION_NAMES, names.join(", "));
    }

    #[test]
    fn a_choice_is_kept_in_chain_order_whatever_order_it_came_in() {
        let choice = Choice::parse(
            &ids(&["upscale_2x", "faces", "repair", "faces", "colorize"]),
            |_| true,
        )
        .expect("valid");
        assert_eq!(choice.ids(), ["faces", "colorize", "upscale_2x"]);
    }

    #[test]
    fn every_problem_of_a_choice_is_reported() {
        let errors = Choice::parse(&ids(&["sharpen", "colorize", "upscale_4x", "upscale_2x"]), |o| {
            o != RestorationOption::Colorize
        })
        .expect_err("invalid");
        assert_eq!(
            errors,
            [
                ChoiceError::Unknown("sharpen".to_owned()),
                ChoiceError::Unavailable(RestorationOption::Colorize),
                ChoiceError::Conflicting(RestorationOption::Upscale2x, RestorationOption::Upscale4x),
            ]
        );
    }

    #[test]
    fn mixed_choices_are_quoted_one_line_per_kind() {
        let parse = |list: &[&str]| Choice::parse(&ids(list), |_| true).expect("valid");
        let photos = [
            parse(&["faces", "upscale_2x"]),
            parse(&[]),
            parse(&["faces", "colorize"]),
        ];
        let quote = prices().quote(&photos);
        let lines: Vec<(&str, i64, u32)> = quote
            .line_items
            .iter()
            .map(|l| (l.kind.as_str(), l.unit_amount, l.quantity))
            .collect();
        assert_eq!(
            lines,
            [
                ("repair", 500, 3),
                ("faces", 200, 2),
                ("colorize", 300, 1),
                ("upscale_2x", 100, 1)
            ]
        );
        assert_eq!(quote.photo_amounts, [800, 500, 1000]);
        assert_eq!(quote.amount_total, 2300);
        assert_eq!(quote.amount_total, quote.photo_amounts.iter().sum::<i64>());
        assert_eq!(quote.currency, "usd");
    }

    #[test]
    fn without_options_the_quote_is_the_repair_alone() {
        let quote = prices().quote(&[Choice::default(), Choice::default()]);
        assert_eq!(quote.line_items.len(), 1);
        assert_eq!(
            (quote.line_items[0].kind.as_str(), quote.line_items[0].quantity),
            ("repair", 2)
        );
        assert_eq!((quote.photo_amounts, quote.amount_total), (vec![500, 500], 1000));
    }
}
