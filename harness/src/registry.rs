//! The registry of tests: every test the catalog provides, by unique name.

use crate::test::Test;

/// A set of tests with unique names, in registration order.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    tests: Vec<Test>,
}

/// Registering the same name twice.
#[derive(Debug, thiserror::Error)]
#[error("test {0:?} is registered twice")]
pub struct DuplicateTest(pub String);

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a test; names must be unique.
    pub fn register(&mut self, t: Test) -> Result<(), DuplicateTest> {
        if self.get(&t.name).is_some() {
            return Err(DuplicateTest(t.name));
        }
        self.tests.push(t);
        Ok(())
    }

    /// A test by exact name.
    pub fn get(&self, name: &str) -> Option<&Test> {
        self.tests.iter().find(|t| t.name == name)
    }

    /// Every test, in registration order.
    pub fn tests(&self) -> &[Test] {
        &self.tests
    }

    /// Number of tests.
    pub fn len(&self) -> usize {
        self.tests.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates() {
        let mut r = Registry::new();
        r.register(Test::new("cl.basic", |_c| async { Ok(()) }))
            .unwrap();
        assert!(r
            .register(Test::new("cl.basic", |_c| async { Ok(()) }))
            .is_err());
        assert_eq!(r.len(), 1);
        assert!(r.get("cl.basic").is_some());
    }
}
