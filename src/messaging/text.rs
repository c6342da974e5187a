//! What an invitation says, in the customer's language: plain text, who invites them and
//! why, the link, how long it is valid, and that nothing is shared before they agree.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Invitation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    De,
}

impl Language {
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::De => "de",
        }
    }
}

/// The subject and body of the e-mail.
pub(super) fn email(i: &Invitation<'_>) -> (String, String) {
    let (who, link, minutes) = (inviter(i), i.link, i.valid_minutes);
    match i.language {
        Language::En => (
            format!("Video support from {}", i.organisation),
            format!(
                "Hello,\n\n\
                 {who} has invited you to a live video support session.\n\n\
                 Open this link on your phone to join:\n\n{link}\n\n\
                 The link is valid for {minutes} minutes. Your camera and microphone are shared \
                 only after you agree on the page, and you can stop at any time.\n\n\
                 If you did not expect this message, ignore it.\n"
            ),
        ),
        Language::De => (
            format!("Video-Support von {}", i.organisation),
            format!(
                "Guten Tag,\n\n\
                 {who} lädt Sie zu einer Video-Support-Sitzung ein.\n\n\
                 Öffnen Sie diesen Link auf Ihrem Smartphone, um teilzunehmen:\n\n{link}\n\n\
                 Der Link ist {minutes} Minuten gültig. Kamera und Mikrofon werden erst geteilt, \
                 wenn Sie auf der Seite zustimmen, und Sie können jederzeit beenden.\n\n\
                 Wenn Sie diese Nachricht nicht erwartet haben, ignorieren Sie sie.\n"
            ),
        ),
    }
}

/// The SMS: short enough for two segments with a long link.
pub(super) fn sms(i: &Invitation<'_>) -> String {
    let (who, link, minutes) = (inviter(i), i.link, i.valid_minutes);
    match i.language {
        Language::En => {
            format!("{who} invites you to video support: {link} (valid {minutes} min)")
        }
        Language::De => {
            format!("{who} lädt Sie zum Video-Support ein: {link} (gültig {minutes} Min.)")
        }
    }
}

fn inviter(i: &Invitation<'_>) -> String {
    if i.organisation.is_empty() {
        i.technician.to_owned()
    } else {
        format!("{} ({})", i.technician, i.organisation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_link_in_the_chosen_language() {
        let mut i = Invitation {
            link: "https://support.example.com/c#tok",
            technician: "Ada",
            organisation: "Example GmbH",
            valid_minutes: 15,
            language: Language::De,
        };
        let (subject, body) = email(&i);
        assert_eq!(subject, "Video-Support von Example GmbH");
        assert!(body.contains("Ada (Example GmbH) lädt Sie") && body.contains(i.link));
        assert!(sms(&i).contains("gültig 15 Min."));
        i.language = Language::En;
        assert!(email(&i).1.contains("valid for 15 minutes"));
        assert!(sms(&i).starts_with("Ada (Example GmbH) invites you"));
    }
}
