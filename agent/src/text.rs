//! Text the agent passes on from elsewhere (DaCHS's words, commit statuses), kept within bounds.

/// At most `max` characters (not bytes: never inside one), a cut marked with `…`.
pub fn bounded(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cut_is_marked_and_counts_characters() {
        assert_eq!(super::bounded("été".into(), 3), "été");
        assert_eq!(super::bounded("étés".into(), 3), "ét…");
    }
}
