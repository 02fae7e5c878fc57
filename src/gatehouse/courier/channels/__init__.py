"""Delivery technologies: SMTP, SendGrid, Twilio SMS and WhatsApp, the console."""
