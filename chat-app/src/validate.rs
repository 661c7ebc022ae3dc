//! Input rules, each failure with a message fit to show a person.

use crate::error::AppError;

pub const MESSAGE_MAX_CHARS: usize = 225;
pub const USERNAME_MAX_CHARS: usize = 32;
pub const PASSWORD_MIN_CHARS: usize = 8;
// Bounds hashing work per request.
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// A chat message: trimmed, 1 to 225 characters, no control characters but newlines and tabs.
pub fn message(raw: Option<&str>) -> Result<String, AppError> {
    let raw = raw.ok_or_else(|| AppError::bad_request("message is required"))?;
    let text = raw.replace("\r\n", "\n");
    let text = text.trim();
    if text.is_empty() {
        return Err(AppError::bad_request("message must not be empty"));
    }
    let chars = text.chars().count();
    if chars > MESSAGE_MAX_CHARS {
        return Err(AppError::bad_request(format!(
            "message must be at most {MESSAGE_MAX_CHARS} characters (it has {chars})"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AppError::bad_request(
            "message must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

pub const TITLE_MAX_CHARS: usize = 80;

/// A group's name: trimmed, 1 to 80 characters, no control characters.
pub fn title(raw: Option<&str>) -> Result<String, AppError> {
    let t = raw.unwrap_or("").trim();
    let n = t.chars().count();
    if n == 0 || n > TITLE_MAX_CHARS || t.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "a group's name must be 1 to {TITLE_MAX_CHARS} characters, without control characters"
        )));
    }
    Ok(t.to_owned())
}

pub fn username(raw: &str) -> Result<&str, AppError> {
    let name = raw.trim();
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.chars().count() > USERNAME_MAX_CHARS || !ok_chars {
        return Err(AppError::bad_request(format!(
            "username must be 1 to {USERNAME_MAX_CHARS} characters: letters, digits, '_', '.' or '-'"
        )));
    }
    Ok(name)
}

pub fn password(raw: &str) -> Result<&str, AppError> {
    let n = raw.chars().count();
    if n < PASSWORD_MIN_CHARS {
        return Err(AppError::bad_request(format!(
            "password must be at least {PASSWORD_MIN_CHARS} characters"
        )));
    }
    if n > PASSWORD_MAX_CHARS {
        return Err(AppError::bad_request(format!(
            "password must be at most {PASSWORD_MAX_CHARS} characters"
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(message(Some("  hi\r\nthere ")).unwrap(), "hi\nthere");
        assert!(message(None).is_err());
        assert!(message(Some("   ")).is_err());
        assert!(message(Some(&"é".repeat(225))).is_ok());
        assert!(message(Some(&"é".repeat(226))).is_err());
        assert!(message(Some("a\u{0}b")).is_err());
        assert_eq!(
            message(Some("<img src=x onerror=alert(1)>")).unwrap(),
            "<img src=x onerror=alert(1)>"
        );
    }

    #[test]
    fn usernames_and_passwords() {
        assert_eq!(username(" alice ").unwrap(), "alice");
        assert!(username("").is_err());
        assert!(username("a b").is_err());
        assert!(username("<script>").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
    }
}
