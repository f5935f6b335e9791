//! bogie's test catalog: kola's Flatcar tests under their exact names, one module per family.

use bogie_harness::{Registry, Test};

pub mod basic;
pub mod ignition;
pub mod misc;
pub mod util;

/// Every test of the catalog, in family order.
pub fn all() -> Vec<Test> {
    let mut v = Vec::new();
    v.extend(basic::tests());
    v.extend(ignition::tests());
    v.extend(misc::tests());
    v
}

/// The catalog as a registry.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    for t in all() {
        r.register(t).expect("catalog names are unique");
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_kola_shaped() {
        let r = super::registry();
        assert!(!r.is_empty());
        for t in r.tests() {
            assert!(t.name.contains('.'), "{} is not family.name", t.name);
        }
    }
}
