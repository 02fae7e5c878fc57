"""What the pages say, in English and Spanish (DESIGN 10's labels are exact: tests and people rely
on them), and the language a request prefers (`Accept-Language`)."""

from __future__ import annotations

from collections.abc import Callable

from gatehouse.ui.messages import MESSAGES

LANGUAGES = ("en", "es")

# key: (English, Spanish). `{name}` fields are filled by `Text.__call__`.
_TEXT: dict[str, tuple[str, str]] = {
    # DESIGN 10's fields and buttons
    "name": ("Name", "Nombre"),
    "email": ("Email", "Correo electrónico"),
    "password": ("Password", "Contraseña"),
    "current_password": ("Current password", "Contraseña actual"),
    "new_password": ("New password", "Nueva contraseña"),
    "phone": ("Phone", "Teléfono"),
    "code": ("Code", "Código"),
    "recovery_code": ("Recovery code", "Código de recuperación"),
    "create_account": ("Create account", "Crear cuenta"),
    "verify": ("Verify", "Verificar"),
    "sign_in": ("Sign in", "Iniciar sesión"),
    "passkey_sign_in": ("Sign in with a passkey", "Iniciar sesión con una llave de acceso"),
    "add_passkey": ("Add a passkey", "Añadir una llave de acceso"),
    "totp_setup": ("Set up authenticator app", "Configurar la app de autenticación"),
    "sign_out": ("Sign out", "Cerrar sesión"),
    "sign_out_everywhere": ("Sign out everywhere", "Cerrar sesión en todas partes"),
    "delete_account": ("Delete account", "Eliminar cuenta"),
    # other controls
    "passkey_name": ("Passkey name", "Nombre de la llave de acceso"),
    "send_code": ("Send code", "Enviar código"),
    "resend": ("Send a new code", "Enviar un código nuevo"),
    "reset_password": ("Reset password", "Restablecer la contraseña"),
    "save": ("Save", "Guardar"),
    "save_phone": ("Save phone", "Guardar teléfono"),
    "change_password": ("Change password", "Cambiar la contraseña"),
    "rename": ("Rename", "Renombrar"),
    "remove": ("Remove", "Quitar"),
    "totp_remove": ("Remove authenticator app", "Quitar la app de autenticación"),
    "new_recovery_codes": ("Get new recovery codes", "Obtener códigos de recuperación nuevos"),
    "confirm": ("Confirm", "Confirmar"),
    "confirm_passkey": ("Confirm with a passkey", "Confirmar con una llave de acceso"),
    "channel": ("Send the code by", "Enviar el código por"),
    "channel_email": ("Email", "Correo electrónico"),
    "channel_sms": ("SMS", "SMS"),
    "channel_whatsapp": ("WhatsApp", "WhatsApp"),
    "optional": ("Optional", "Opcional"),
    # titles and words around the fields
    "skip": ("Skip to content", "Saltar al contenido"),
    "title_signup": ("Create your account", "Crea tu cuenta"),
    "title_verify": ("Verify your email", "Verifica tu correo"),
    "title_signin": ("Sign in", "Inicia sesión"),
    "title_mfa": ("Second step", "Segundo paso"),
    "title_recover": ("Recover your account", "Recupera tu cuenta"),
    "title_reset": ("Choose a new password", "Elige una contraseña nueva"),
    "title_account": ("Your account", "Tu cuenta"),
    "title_error": ("Something went wrong", "Algo salió mal"),
    "have_account": ("Already have an account?", "¿Ya tienes una cuenta?"),
    "no_account": ("No account yet?", "¿Aún no tienes cuenta?"),
    "forgot": ("Forgot your password?", "¿Olvidaste tu contraseña?"),
    "or": ("or", "o"),
    "back_to_sign_in": ("Back to sign in", "Volver a iniciar sesión"),
    "password_hint": ("At least 8 characters.", "Al menos 8 caracteres."),
    "phone_hint": (
        "In international format, e.g. +14155550123.",
        "En formato internacional, p. ej. +34600123456.",
    ),
    "code_hint": ("The 6-digit code we sent you.", "El código de 6 dígitos que te enviamos."),
    "factor_code_hint": (
        "From your authenticator app, or a recovery code.",
        "De tu app de autenticación, o un código de recuperación.",
    ),
    "verify_intro": (
        "We sent a code to your email address. Enter it here.",
        "Enviamos un código a tu correo electrónico. Escríbelo aquí.",
    ),
    "mfa_intro": (
        "Your account has a second factor. Finish signing in with one of these.",
        "Tu cuenta tiene un segundo factor. Termina de iniciar sesión con uno de estos.",
    ),
    "recover_intro": (
        "Give your email or your phone, and how to send you a code.",
        "Indica tu correo o tu teléfono, y cómo enviarte un código.",
    ),
    "recover_identify": ("Your account", "Tu cuenta"),
    "reset_intro": (
        "If an account matches, we sent it a code. Enter it with your new password.",
        "Si una cuenta coincide, le enviamos un código. Escríbelo con tu nueva contraseña.",
    ),
    # the account page
    "section_profile": ("Profile", "Perfil"),
    "section_phone": ("Phone", "Teléfono"),
    "section_password": ("Password", "Contraseña"),
    "section_passkeys": ("Passkeys", "Llaves de acceso"),
    "section_totp": ("Authenticator app", "App de autenticación"),
    "section_recovery": ("Recovery codes", "Códigos de recuperación"),
    "section_sessions": ("Sessions", "Sesiones"),
    "section_delete": ("Delete account", "Eliminar la cuenta"),
    "section_live": ("Live activity", "Actividad en directo"),
    "section_reauth": ("Confirm it's you", "Confirma que eres tú"),
    "signed_in_as": ("Signed in as {email}", "Sesión iniciada como {email}"),
    "no_phone": ("No phone number.", "Sin número de teléfono."),
    "phone_pending": (
        "A code was sent to your new number. Enter it to confirm the number.",
        "Enviamos un código a tu nuevo número. Escríbelo para confirmarlo.",
    ),
    "phone_remove_hint": (
        "Leave it empty and save to remove your number.",
        "Déjalo vacío y guarda para quitar tu número.",
    ),
    "no_passkeys": ("No passkeys yet.", "Aún no tienes llaves de acceso."),
    "added_on": ("Added {date}", "Añadida el {date}"),
    "last_used": ("last used {date}", "último uso el {date}"),
    "totp_none": ("No authenticator app is set up.", "No hay ninguna app de autenticación."),
    "totp_on": ("An authenticator app is set up.", "Hay una app de autenticación configurada."),
    "totp_scan": (
        "Scan this code with your authenticator app, or type the key, then enter the app's code.",
        "Escanea este código con tu app de autenticación, o escribe la clave, y luego el código.",
    ),
    "totp_qr_alt": ("QR code for your authenticator app", "Código QR para tu app de autenticación"),
    "totp_key": ("Key", "Clave"),
    "recovery_left": (
        "{count} recovery codes left.",
        "Te quedan {count} códigos de recuperación.",
    ),
    "recovery_none": (
        "Recovery codes come with a second factor.",
        "Los códigos de recuperación llegan con un segundo factor.",
    ),
    "recovery_show": (
        "Your recovery codes. Keep them somewhere safe: they are shown only once.",
        "Tus códigos de recuperación. Guárdalos en un lugar seguro: solo se muestran una vez.",
    ),
    "session_current": ("This device", "Este dispositivo"),
    "session_device": ("Unknown device", "Dispositivo desconocido"),
    "session_since": ("Signed in {date}", "Sesión iniciada el {date}"),
    "session_used": ("last active {date}", "última actividad el {date}"),
    "delete_intro": (
        "This erases your account and everything in it. Give your password to confirm.",
        "Esto borra tu cuenta y todo lo que contiene. Escribe tu contraseña para confirmar.",
    ),
    "reauth_intro": (
        "For your security, this change needs a recent sign-in.",
        "Por tu seguridad, este cambio necesita un inicio de sesión reciente.",
    ),
    "live_connecting": ("Connecting…", "Conectando…"),
    "live_on": ("Live updates are on.", "Actualizaciones en directo activas."),
    "live_off": (
        "Live updates are off; retrying.",
        "Sin actualizaciones en directo; reintentando.",
    ),
    "signed_out_live": ("You have been signed out.", "Se ha cerrado tu sesión."),
    "signed_out_hint": (
        "Your session ended on this device. Sign in again to go on.",
        "Tu sesión terminó en este dispositivo. Inicia sesión de nuevo para continuar.",
    ),
    "no_js_passkeys": (
        "Passkeys need a browser with JavaScript and WebAuthn.",
        "Las llaves de acceso necesitan un navegador con JavaScript y WebAuthn.",
    ),
}


class Text:
    """The page text of one language: `t("key", name=value)`."""

    def __init__(self, language: str):
        self.language = language if language in LANGUAGES else "en"
        self._index = LANGUAGES.index(self.language)

    def __call__(self, key: str, **fields: object) -> str:
        pair = _TEXT.get(key) or MESSAGES.get(key)
        if pair is None:
            raise KeyError(key)
        text = pair[self._index]
        return text.format(**fields) if fields else text

    def has(self, key: str) -> bool:
        return key in _TEXT or key in MESSAGES


def preferred(accept_language: str | None) -> str:
    """`es` when the header prefers Spanish to English (by its q-values, in its order), else
    `en`. Malformed entries are skipped."""
    choices: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "")[:1000].split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            choices.append((-quality, position, primary))
    return min(choices)[2] if choices else "en"


Translator = Callable[..., str]
