//! A subscriber's wish about the layers it receives, besides its bandwidth:
//! a maximum width (a WHEP `?maxWidth=`, a LiveKit tile) and what a player
//! asks for through the WHEP layer extension (one simulcast encoding,
//! exactly or at most some spatial and temporal layer, a maximum size). The
//! selector chooses among the layers the wish admits; when it admits none
//! of the layers flowing, the wish gives way (the narrowest of what it
//! would admit but for the size, else the narrowest layer), so a viewer is
//! never left without a picture by a wish.

use str0m::media::Rid;

use super::LayerView;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerWish {
    /// This simulcast encoding only.
    pub rid: Option<Rid>,
    /// Exactly this spatial / temporal layer.
    pub spatial: Option<u8>,
    pub temporal: Option<u8>,
    /// At most these.
    pub max_spatial: Option<u8>,
    pub max_temporal: Option<u8>,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
}

impl LayerWish {
    /// The layer's stream and spatial layer are what the wish names.
    fn names(&self, l: &LayerView) -> bool {
        self.rid.is_none_or(|r| l.id == Some(r))
            && self.spatial.is_none_or(|s| l.spatial == s)
            && self.max_spatial.is_none_or(|s| l.spatial <= s)
    }

    /// The layer is as small as the wish wants (`max_width` combined with
    /// the session's own limit).
    fn fits(&self, l: &LayerView, max_width: Option<u32>) -> bool {
        let width = match (self.max_width, max_width) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        width.is_none_or(|w| l.width <= w) && self.max_height.is_none_or(|h| l.height <= h)
    }

    /// The layers (lowest first) a subscriber with this wish and
    /// `max_width` may be given; never empty when `layers` is not.
    pub fn allowed(&self, layers: &[LayerView], max_width: Option<u32>) -> Vec<LayerView> {
        let admitted: Vec<LayerView> = layers
            .iter()
            .filter(|l| self.names(l) && self.fits(l, max_width))
            .copied()
            .collect();
        if !admitted.is_empty() {
            return admitted;
        }
        let named = layers.iter().find(|l| self.names(l));
        named.or(layers.first()).copied().into_iter().collect()
    }

    /// The highest temporal layer the wish allows of one with `max_tid`.
    pub fn temporal_cap(&self, max_tid: u8) -> u8 {
        self.temporal
            .or(self.max_temporal)
            .map_or(max_tid, |t| t.min(max_tid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<LayerView> {
        let rid = |s: &str| Some(Rid::from(s));
        vec![
            LayerView::new(rid("q"), 320, 180, 150_000),
            LayerView::new(rid("h"), 640, 360, 500_000),
            LayerView::new(rid("f"), 1280, 720, 2_500_000),
        ]
    }

    fn widths(v: &[LayerView]) -> Vec<u32> {
        v.iter().map(|l| l.width).collect()
    }

    #[test]
    fn a_wish_narrows_the_choice_and_gives_way_when_nothing_fits() {
        let all = layers();
        let none = LayerWish::default();
        assert_eq!(widths(&none.allowed(&all, None)), [320, 640, 1280]);
        assert_eq!(widths(&none.allowed(&all, Some(700))), [320, 640]);
        let h = LayerWish {
            rid: Some(Rid::from("h")),
            ..Default::default()
        };
        assert_eq!(widths(&h.allowed(&all, None)), [640]);
        // The rid beats the session's width limit rather than nothing.
        assert_eq!(widths(&h.allowed(&all, Some(400))), [640]);
        let small = LayerWish {
            max_height: Some(200),
            ..Default::default()
        };
        assert_eq!(widths(&small.allowed(&all, None)), [320]);
        let gone = LayerWish {
            rid: Some(Rid::from("x")),
            ..Default::default()
        };
        assert_eq!(widths(&gone.allowed(&all, None)), [320]);
    }

    #[test]
    fn spatial_and_temporal_wishes() {
        let svc: Vec<LayerView> = (0..3)
            .map(|s| LayerView {
                spatial: s,
                ..LayerView::new(None, 320 << s, 180 << s, 150_000 << s)
            })
            .collect();
        let at_most_one = LayerWish {
            max_spatial: Some(1),
            ..Default::default()
        };
        assert_eq!(widths(&at_most_one.allowed(&svc, None)), [320, 640]);
        let exactly_two = LayerWish {
            spatial: Some(2),
            temporal: Some(0),
            ..Default::default()
        };
        assert_eq!(widths(&exactly_two.allowed(&svc, None)), [1280]);
        assert_eq!(exactly_two.temporal_cap(2), 0);
        assert_eq!(LayerWish::default().temporal_cap(2), 2);
        let max_t = LayerWish {
            max_temporal: Some(5),
            ..Default::default()
        };
        assert_eq!(max_t.temporal_cap(2), 2);
    }
}
