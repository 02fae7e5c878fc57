"""The pages' messages (English, Spanish): errors, notices after a change, the code's delivery as
it goes, and what the live socket says. No message tells more than the API's answer does."""

from __future__ import annotations

MESSAGES: dict[str, tuple[str, str]] = {
    # errors
    "err_invalid": (
        "Some fields are not right. Check them and try again.",
        "Algunos campos no son correctos. Revísalos y vuelve a intentarlo.",
    ),
    "err_name": ("Give a name of 1 to 200 characters.", "Escribe un nombre de 1 a 200 caracteres."),
    "err_email": ("Give a valid email address.", "Escribe un correo electrónico válido."),
    "err_password_short": (
        "The password must have at least 8 characters.",
        "La contraseña debe tener al menos 8 caracteres.",
    ),
    "err_password_long": ("The password is too long.", "La contraseña es demasiado larga."),
    "err_password_common": (
        "This password is one of the most common ones: choose another.",
        "Esta contraseña es de las más comunes: elige otra.",
    ),
    "err_phone": (
        "Give the phone in international format, e.g. +14155550123.",
        "Escribe el teléfono en formato internacional, p. ej. +34600123456.",
    ),
    "err_code_missing": ("Enter the code.", "Escribe el código."),
    "err_identify": (
        "Give your email or your phone (one of them).",
        "Indica tu correo o tu teléfono (uno de los dos).",
    ),
    "err_passkey_name": (
        "A passkey name has 1 to 64 printable characters.",
        "El nombre de una llave de acceso tiene de 1 a 64 caracteres imprimibles.",
    ),
    "err_factor_required": (
        "Your account has a second factor: enter its code too.",
        "Tu cuenta tiene un segundo factor: escribe también su código.",
    ),
    "err_wrong_code": (
        "That code is wrong or has expired. After 5 wrong tries a code stops working: ask for "
        "a new one (new codes may take up to an hour after many wrong tries).",
        "Ese código no es correcto o ha caducado. Tras 5 intentos fallidos un código deja de "
        "valer: pide uno nuevo (tras muchos intentos fallidos puede tardar hasta una hora).",
    ),
    "err_wrong_factor": ("That code is not right.", "Ese código no es correcto."),
    "err_too_many_codes": (
        "Too many wrong codes. Set up the authenticator app again.",
        "Demasiados códigos incorrectos. Configura la app de autenticación de nuevo.",
    ),
    "err_credentials": ("Wrong email or password.", "Correo o contraseña incorrectos."),
    "err_password_wrong": ("The password is wrong.", "La contraseña no es correcta."),
    "err_passkey_refused": (
        "The passkey was not accepted. Try again.",
        "La llave de acceso no fue aceptada. Vuelve a intentarlo.",
    ),
    "err_passkey_cancelled": (
        "The passkey prompt was closed or timed out. Try again.",
        "Se cerró la ventana de la llave de acceso o se agotó el tiempo. Vuelve a intentarlo.",
    ),
    "err_mfa_expired": (
        "This sign-in expired or had too many tries. Start again.",
        "Este inicio de sesión caducó o tuvo demasiados intentos. Empieza de nuevo.",
    ),
    "err_session": (
        "Your session has ended. Sign in again.",
        "Tu sesión ha terminado. Inicia sesión de nuevo.",
    ),
    "err_reauth": (
        "For your security, confirm it's you first, then try again.",
        "Por tu seguridad, confirma primero que eres tú y vuelve a intentarlo.",
    ),
    "err_rate_limited": (
        "Too many attempts. Try again in {wait}.",
        "Demasiados intentos. Vuelve a intentarlo en {wait}.",
    ),
    "err_code_recently": (
        "A code was sent recently. You can ask for another in {wait}.",
        "Se envió un código hace poco. Podrás pedir otro en {wait}.",
    ),
    "err_unavailable": (
        "The service is unavailable right now. Try again in a moment.",
        "El servicio no está disponible ahora. Vuelve a intentarlo en un momento.",
    ),
    "err_csrf": (
        "This form expired or came from another site. Reload the page and try again.",
        "Este formulario caducó o vino de otro sitio. Recarga la página y vuelve a intentarlo.",
    ),
    "err_totp_exists": (
        "An authenticator app is already set up: remove it first.",
        "Ya hay una app de autenticación: quítala primero.",
    ),
    "err_passkey_known": (
        "This passkey is already registered.",
        "Esta llave de acceso ya está registrada.",
    ),
    "err_conflict": (
        "That cannot be done now: reload the page and check.",
        "Eso no se puede hacer ahora: recarga la página y compruébalo.",
    ),
    "err_not_found": ("That no longer exists.", "Eso ya no existe."),
    "err_recovery_first": (
        "Set up a second factor first.",
        "Configura primero un segundo factor.",
    ),
    "err_no_passkey": ("This account has no passkey.", "Esta cuenta no tiene llave de acceso."),
    "err_unexpected": ("Something went wrong. Try again.", "Algo salió mal. Vuelve a intentarlo."),
    "wait_second": ("1 second", "1 segundo"),
    "wait_seconds": ("{n} seconds", "{n} segundos"),
    "wait_minutes": ("{n} minutes", "{n} minutos"),
    "wait_hours": ("{n} hours", "{n} horas"),
    # notices after a change (`?notice=`)
    "n_signed_out": ("You are signed out.", "Has cerrado la sesión."),
    "n_signed_out_everywhere": (
        "You are signed out everywhere.",
        "Has cerrado la sesión en todas partes.",
    ),
    "n_verified": ("Your email is verified. Sign in.", "Tu correo está verificado. Inicia sesión."),
    "n_code_sent": (
        "If the address can receive mail, a verification code has been sent to it.",
        "Si la dirección puede recibir correo, se le ha enviado un código de verificación.",
    ),
    "n_resent": (
        "If the address can receive mail, a new code is on its way.",
        "Si la dirección puede recibir correo, va de camino un código nuevo.",
    ),
    "n_reset_sent": (
        "If an account matches, a reset code has been sent to it.",
        "Si una cuenta coincide, se le ha enviado un código para restablecer la contraseña.",
    ),
    "n_reset": (
        "Your password was reset. Sign in with the new one.",
        "Tu contraseña se restableció. Inicia sesión con la nueva.",
    ),
    "n_password_changed": (
        "Your password was changed. Sign in again.",
        "Tu contraseña cambió. Inicia sesión de nuevo.",
    ),
    "n_deleted": ("Your account was deleted.", "Tu cuenta se eliminó."),
    "n_saved": ("Saved.", "Guardado."),
    "n_password_required": (
        "Your email is verified. Set a password here to sign in.",
        "Tu correo está verificado. Elige aquí una contraseña para iniciar sesión.",
    ),
    "n_phone_code": (
        "A code was sent to your new number.",
        "Enviamos un código a tu nuevo número.",
    ),
    "n_phone_verified": (
        "Your phone number is confirmed.",
        "Tu número de teléfono está confirmado.",
    ),
    "n_phone_removed": ("Your phone number was removed.", "Tu número de teléfono se quitó."),
    "n_passkey_added": ("Passkey added. You can name it here.", "Llave añadida. Puedes nombrarla."),
    "n_passkey_renamed": ("Passkey renamed.", "Llave de acceso renombrada."),
    "n_passkey_removed": ("Passkey removed.", "Llave de acceso quitada."),
    "n_totp_on": ("Authenticator app set up.", "App de autenticación configurada."),
    "n_totp_removed": ("Authenticator app removed.", "App de autenticación quitada."),
    "n_session_ended": ("That session was signed out.", "Se cerró esa sesión."),
    "n_reauthed": (
        "Thanks. You can make the change now.",
        "Gracias. Ya puedes hacer el cambio.",
    ),
    # the code's delivery (verify page)
    "d_queued": ("Your code is queued for sending…", "Tu código está en cola para enviarse…"),
    "d_sending": ("Sending your code by {channel}…", "Enviando tu código por {channel}…"),
    "d_retrying": (
        "Sending by {channel} failed; trying again (attempt {attempts})…",
        "El envío por {channel} falló; reintentando (intento {attempts})…",
    ),
    "d_sent": (
        "Your code was sent by {channel}. Check your inbox.",
        "Tu código se envió por {channel}. Revisa tu bandeja de entrada.",
    ),
    "d_fallback": (
        "Sending by {first} failed; your code was sent by {channel} instead.",
        "El envío por {first} falló; tu código se envió por {channel}.",
    ),
    "d_failed": (
        "We could not send your code. Ask for a new one, or try again later.",
        "No pudimos enviar tu código. Pide uno nuevo o inténtalo más tarde.",
    ),
    "d_unknown": ("Checking the delivery…", "Comprobando el envío…"),
    "ch_email": ("email", "correo electrónico"),
    "ch_sms": ("SMS", "SMS"),
    "ch_whatsapp": ("WhatsApp", "WhatsApp"),
    # what the live socket hears (account page)
    "rv_other": (
        "Another session of your account was signed out.",
        "Se cerró otra sesión de tu cuenta.",
    ),
    "nt_password_changed": ("Your password was changed.", "Tu contraseña cambió."),
    "nt_password_reset": ("Your password was reset.", "Tu contraseña se restableció."),
    "nt_phone_changed": ("A new phone number was confirmed.", "Se confirmó un nuevo teléfono."),
    "nt_phone_removed": ("Your phone number was removed.", "Se quitó tu teléfono."),
    "nt_email_changed": ("Your email address was changed.", "Tu correo electrónico cambió."),
    "nt_account_deleted": ("Your account was deleted.", "Tu cuenta se eliminó."),
    "nt_new_device": (
        "Your account was signed in on a new device.",
        "Se inició sesión en tu cuenta desde un dispositivo nuevo.",
    ),
    "nt_mfa_enabled": ("An authenticator app was added.", "Se añadió una app de autenticación."),
    "nt_mfa_disabled": ("The authenticator app was removed.", "Se quitó la app de autenticación."),
    "nt_recovery_codes_replaced": (
        "New recovery codes were made.",
        "Se crearon códigos de recuperación nuevos.",
    ),
    "nt_recovery_code_used": (
        "A recovery code was used to sign in.",
        "Se usó un código de recuperación para iniciar sesión.",
    ),
    "nt_passkey_added": ("A passkey was added.", "Se añadió una llave de acceso."),
    "nt_passkey_removed": ("A passkey was removed.", "Se quitó una llave de acceso."),
    "nt_other": ("A security change was made to your account.", "Hubo un cambio de seguridad."),
}

# What the account page's script may say, handed to it in data attributes.
LIVE_KEYS = (
    "live_connecting",
    "live_on",
    "live_off",
    "signed_out_live",
    "rv_other",
    "err_passkey_cancelled",
    "err_unexpected",
    "n_passkey_added",
    *(key for key in MESSAGES if key.startswith("nt_")),
)
DELIVERY_KEYS = tuple(k for k in MESSAGES if k.startswith(("d_", "ch_")))
