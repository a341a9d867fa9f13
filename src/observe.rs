//! What a build tells as soon as it knows it, so that writing can begin before the image is
//! whole: a tarball starts on a platform's base while the release's layers are made
//! (`sink::tarball::Early`), and a push sends each new layer to its registries while
//! the build goes on (`sink::registry::SendAhead`). One mechanism for both.

use futures_util::future::BoxFuture;

use crate::context::Context;
use crate::oci::{Image, Layer};

/// Told of a build's progress. Every method has a default that does nothing.
pub trait Observer: Sync {
    /// A platform's base is resolved and made fit to build on: its layers are the image's
    /// first. `platform` is its place among the build's platforms (0 for one platform).
    fn base(&self, platform: usize, base: &Image) {
        let _ = (platform, base);
    }

    /// A layer this build has just written (one found in no cache). The build waits for the
    /// returned work before it counts the layer as made; what fails there is the observer's
    /// to keep (the build goes on).
    fn layer_written<'a>(&'a self, layer: &'a Layer, cx: Context<'a>) -> BoxFuture<'a, ()> {
        let _ = (layer, cx);
        Box::pin(std::future::ready(()))
    }
}

/// Several observers, each told everything: of a written layer, all at once.
pub struct Observers<'a>(pub Vec<&'a dyn Observer>);

impl Observer for Observers<'_> {
    fn base(&self, platform: usize, base: &Image) {
        for o in &self.0 {
            o.base(platform, base);
        }
    }

    fn layer_written<'a>(&'a self, layer: &'a Layer, cx: Context<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            futures_util::future::join_all(self.0.iter().map(|o| o.layer_written(layer, cx))).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Count(Mutex<Vec<usize>>);
    impl Observer for Count {
        fn base(&self, platform: usize, _base: &Image) {
            if let Ok(mut v) = self.0.lock() {
                v.push(platform);
            }
        }
    }

    #[test]
    fn every_observer_is_told_of_every_base() {
        let (a, b) = (Count(Mutex::new(vec![])), Count(Mutex::new(vec![])));
        let all = Observers(vec![&a, &b]);
        let image = crate::source::scratch(&crate::oci::platform::Platform::host()).unwrap();
        all.base(0, &image);
        all.base(1, &image);
        assert_eq!(*a.0.lock().unwrap(), vec![0, 1]);
        assert_eq!(*b.0.lock().unwrap(), vec![0, 1]);
    }
}
