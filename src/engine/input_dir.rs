//! The file names of a gather task's `INPUT_DIR` (DESIGN §2.10): one distinct name per member of
//! the input set, chosen from the set alone.
//!
//! A name that no other member shares is kept as it is. Members that share a name are told apart
//! by their hash, `<name>.<short hash>`. That form is not reserved: any step may publish a
//! resource whose plain name is exactly `x.2c8b08da5ce6`, and two contents may share a 12-digit
//! prefix. So a form that is already taken, by any member's own name or by a form given before
//! it, falls back to `<name>.<full hash>`, then `<name>.<full hash>.2`, `.3`, …. Forms are given in
//! (name, hash) order, so the same input set always gets the same names and a task's results stay
//! reproducible; no member is ever dropped or served under a name that shows another's content.

use std::collections::HashSet;

use crate::store::schedule::InputRef;

/// The `INPUT_DIR` file name of each member, in the order of `members`; no two are equal.
pub(super) fn input_dir_names(members: &[InputRef]) -> Vec<String> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        (&members[a].name, &members[a].hash).cmp(&(&members[b].name, &members[b].hash))
    });
    // Every member's own name is taken from the start, so no form can stand for a member that is
    // served (or, repeated, would be) under that name.
    let mut taken: HashSet<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut names = vec![String::new(); members.len()];
    for (position, &index) in order.iter().enumerate() {
        let member = &members[index];
        let shares_name =
            |other: Option<&usize>| other.is_some_and(|&o| members[o].name == member.name);
        let repeated = shares_name(position.checked_sub(1).and_then(|p| order.get(p)))
            || shares_name(order.get(position + 1));
        names[index] = if repeated {
            distinct_form(member, &mut taken)
        } else {
            member.name.clone()
        };
    }
    names
}

/// The first of `<name>.<short hash>`, `<name>.<hash>`, `<name>.<hash>.2`, … not yet taken,
/// which it then takes. A name too long for the suffix gives up its end (see [`fitted`]).
fn distinct_form(member: &InputRef, taken: &mut HashSet<String>) -> String {
    let hash = &member.hash;
    let short = fitted(
        &member.name,
        &format!(".{}", crate::store::short_hash(hash)),
    );
    let full = |counter: u64| match counter {
        1 => fitted(&member.name, &format!(".{hash}")),
        n => fitted(&member.name, &format!(".{hash}.{n}")),
    };
    let mut form = if taken.contains(&short) {
        full(1)
    } else {
        short
    };
    let mut n = 1u64;
    while taken.contains(&form) {
        n += 1;
        form = full(n);
    }
    taken.insert(form.clone());
    form
}

/// Longest file name Linux filesystems take, in bytes.
const NAME_MAX: usize = 255;

/// `name` followed by `suffix`, with as much of `name`'s end (whole characters) left out as the
/// result needs to fit in [`NAME_MAX`] bytes. A resource name may already be that long, and a
/// longer entry could not be made in `INPUT_DIR`. The suffix carries the member's own hash, so a
/// shortened form still shows whose content it is.
fn fitted(name: &str, suffix: &str) -> String {
    let mut keep = NAME_MAX.saturating_sub(suffix.len()).min(name.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &name[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, hash: &str) -> InputRef {
        InputRef {
            name: name.into(),
            hash: hash.into(),
            size: 0,
        }
    }

    /// SHA-256 of "one\n" and "two\n".
    const ONE: &str = "2c8b08da5ce60398e1f19af0e5dccc744df274b826abe585eaba68c525434806";
    const TWO: &str = "27dd8ed44a83ff94d557f9fd0412ed5a8cbca69ea04922d88c01184a07300a5a";

    fn names(members: &[InputRef]) -> Vec<String> {
        input_dir_names(members)
    }

    #[test]
    fn plain_names_stay_and_repeated_ones_get_the_short_hash() {
        let got = names(&[member("a", ONE), member("x", ONE), member("x", TWO)]);
        assert_eq!(got, ["a", "x.2c8b08da5ce6", "x.27dd8ed44a83"]);
    }

    #[test]
    fn a_member_named_like_a_short_form_keeps_its_name_and_the_form_grows() {
        let hostile = member("x.2c8b08da5ce6", TWO);
        let got = names(&[member("x", ONE), member("x", TWO), hostile]);
        assert_eq!(
            got,
            [
                format!("x.{ONE}"),
                "x.27dd8ed44a83".into(),
                "x.2c8b08da5ce6".into()
            ]
        );
    }

    #[test]
    fn a_member_named_like_the_full_form_too_pushes_it_to_a_counter() {
        let got = names(&[
            member("x", ONE),
            member("x", TWO),
            member("x.2c8b08da5ce6", TWO),
            member(&format!("x.{ONE}"), TWO),
            member(&format!("x.{ONE}.2"), TWO),
        ]);
        assert_eq!(got[0], format!("x.{ONE}.3"));
        assert_eq!(got[1], "x.27dd8ed44a83");
        assert_eq!(
            &got[2..],
            [
                "x.2c8b08da5ce6".to_string(),
                format!("x.{ONE}"),
                format!("x.{ONE}.2")
            ]
        );
    }

    #[test]
    fn two_hashes_with_one_prefix_get_distinct_names() {
        let other = format!("{}{}", &ONE[..12], &TWO[12..]);
        let got = names(&[member("x", ONE), member("x", &other)]);
        assert_eq!(got, [format!("x.{}", &ONE[..12]), format!("x.{other}")]);
    }

    #[test]
    fn the_names_do_not_depend_on_the_order_members_come_in() {
        let members = [
            member("x", ONE),
            member("x", TWO),
            member("x.2c8b08da5ce6", TWO),
            member("y", ONE),
        ];
        let forward = names(&members);
        let mut reversed = members.to_vec();
        reversed.reverse();
        let mut backward = names(&reversed);
        backward.reverse();
        assert_eq!(forward, backward);
        let distinct: HashSet<&String> = forward.iter().collect();
        assert_eq!(distinct.len(), forward.len());
    }

    #[test]
    fn forms_of_a_name_as_long_as_a_file_name_may_be_still_fit_and_stay_distinct() {
        // 254 bytes: 126 two-byte characters and two ASCII letters.
        let long = format!("{}ab", "é".repeat(126));
        assert_eq!(long.len(), 254);
        let short_form = format!("{}ab", "é".repeat(126));
        let got = names(&[
            member(&long, ONE),
            member(&long, TWO),
            // Takes the first member's short form, shortened as it would be.
            member(&fitted(&short_form, &format!(".{}", &ONE[..12])), TWO),
        ]);
        for name in &got {
            assert!(name.len() <= NAME_MAX, "{} bytes: {name}", name.len());
        }
        assert!(got[0].ends_with(&format!(".{ONE}")), "{}", got[0]);
        assert!(got[1].ends_with(&format!(".{}", &TWO[..12])), "{}", got[1]);
        assert!(got[0].starts_with("éé") && got[1].starts_with("éé"));
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len());
        // A character is never cut in half.
        assert_eq!(
            fitted("aé", &"x".repeat(253)),
            format!("a{}", "x".repeat(253))
        );
        assert_eq!(fitted("ab", ".1"), "ab.1");
    }
}
