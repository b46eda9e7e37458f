"""QR codes drawn on the server as inline SVG: no network, no JavaScript."""
import io

import qrcode
import qrcode.image.svg


def qr_code_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    # Drop the XML declaration so the markup can sit inside HTML.
    return svg[svg.index("<svg") :]
