"""Password recovery: a reset code by email, SMS or WhatsApp, then the new password."""
